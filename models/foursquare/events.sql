-- Check-ins with fine Foursquare venue categories only: the intent is the category's top-level
-- category (seeds/foursquare_categories); a category the seed lacks keeps the source's intent,
-- if any, else stays empty and the events schema names its file lines.
-- A dataset uses this with `sql_models: [foursquare]` in bgen_project.yml.
SELECT
    r.user_id,
    r.ts,
    {{ event_time_columns('r.ts') }},
    r.location,
    coalesce(r.intent, c.top_category) AS intent{% for column in kept_columns %},
    r."{{ column }}"{% endfor %}
FROM {{ ref('raw_events') }} AS r
LEFT JOIN {{ ref('seeds/foursquare_categories') }} AS c
    ON c.category = r.location
ORDER BY r.user_id, r.ts, r.location
