-- Every real event's part in the experiments. Population users' events pretrain the predictors.
-- Each individual user's events, in time order, split into fine-tune `train`, `valid` and `test`
-- by the declared shares; `limited` marks the first var('limited_records') train events (the
-- few-records scenario). Generators see an individual user's weeks only while all of a week is
-- `train` (bgen_assets/assets/synthetic.py), so validation and test stay unseen.
WITH numbered AS (
    SELECT
        e.*,
        s.role,
        row_number() OVER (PARTITION BY e.user_id ORDER BY e.ts, e.location, e.intent) AS event_number,
        count(*) OVER (PARTITION BY e.user_id) AS user_events
    FROM {{ ref('events') }} e
    JOIN {{ ref('user_split') }} s USING (user_id)
)
SELECT
    user_id,
    strftime(date_trunc('week', ts), '%Y-%m-%d') AS week,
    ts,
    weekday,
    time_slot,
    location,
    intent,
    role,
    event_number,
    CASE
        WHEN role = 'population' THEN 'pretrain'
        WHEN event_number <= floor(user_events * {{ var('train_share') }}) THEN 'train'
        WHEN event_number <= floor(user_events * ({{ var('train_share') }} + {{ var('valid_share') }})) THEN 'valid'
        ELSE 'test'
    END AS part,
    role = 'individual' AND event_number <= least({{ var('limited_records') }}, floor(user_events * {{ var('train_share') }})) AS limited
FROM numbered
ORDER BY user_id, ts
