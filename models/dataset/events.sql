-- Normalised events, one row per event: the raw events with weekday (0 = Monday) and time slot.
SELECT
    user_id,
    ts,
    {{ event_time_columns('ts') }},
    location,
    intent
FROM {{ ref('raw_events') }}
ORDER BY user_id, ts, location
