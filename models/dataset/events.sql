-- Normalised events, one row per event: the raw events with weekday (0 = Monday) and time slot,
-- and the source's kept columns (`columns.keep`).
SELECT
    user_id,
    ts,
    {{ event_time_columns('ts') }},
    location,
    intent{% for column in kept_columns %},
    "{{ column }}"{% endfor %}
FROM {{ ref('raw_events') }}
ORDER BY user_id, ts, location
