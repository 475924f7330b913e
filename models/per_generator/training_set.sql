-- The synthetic weeks of generator `{{ generator }}` that experiments may train on, and what for:
-- `pretrain`: weeks generated for population users (pretraining augmentation);
-- `finetune`: an individual user's weeks, each conditioned on that user's train part only
--   (fine-tuning replacement); `limited` on those conditioned only on the user's first
--   `limited_records` events (fine-tuning augmentation).
-- The generator's privacy gate (its evaluation `privacy_{{ generator }}`) must have passed:
-- otherwise building this table fails with the gate's reason, and nothing trains on the data.
WITH conditioning AS (
    SELECT user_id, week, bool_and(limited) AS limited_only
    FROM {{ ref('event_splits') }}
    GROUP BY user_id, week
),
gate AS (
    SELECT CASE WHEN gate_passed THEN true ELSE error(gate_reason) END AS passed
    FROM {{ ref('privacy_' ~ generator) }}
    WHERE level = 'all'
)
SELECT
    s.user_id,
    s.week,
    s.target_week,
    s.sample,
    s.ts,
    s.weekday,
    s.time_slot,
    s.location,
    s.intent,
    CASE WHEN u.role = 'population' THEN 'pretrain' ELSE 'finetune' END AS use,
    u.role = 'individual' AND c.limited_only AS limited
FROM {{ ref('synthetic_' ~ generator) }} s
JOIN {{ ref('user_split') }} u USING (user_id)
JOIN conditioning c USING (user_id, week)
WHERE (SELECT bool_and(passed) FROM gate)
ORDER BY s.user_id, s.ts
