-- Profile attributes inferred from behaviour by the declared rules below, for datasets without demographics.
-- occupation: share of events in weekday office hours (09:00-18:00) and at night (21:00-05:00);
-- consumption_level: tertile of the share of events whose intent is in var('consumption_intents');
-- gender: from a `_M` / `_F` user-id suffix when var('gender_from_user_id_suffix') is true;
-- age group and education have no behavioural signal here and stay 'unknown'.
{%- set consumption = var('consumption_intents', []) %}
{%- set gender_from_id = var('gender_from_user_id_suffix', false) %}
WITH activity AS (
    SELECT
        user_id,
        avg(CASE WHEN weekday < 5 AND time_slot * {{ var('slot_minutes') }} BETWEEN 540 AND 1079 THEN 1 ELSE 0 END) AS office_hours_share,
        avg(CASE WHEN time_slot * {{ var('slot_minutes') }} >= 1260 OR time_slot * {{ var('slot_minutes') }} < 300 THEN 1 ELSE 0 END) AS night_share,
        avg(CASE WHEN intent IN ({% for intent in consumption %}'{{ intent }}'{{ ", " if not loop.last }}{% else %}NULL{% endfor %}) THEN 1 ELSE 0 END) AS consumption_share
    FROM {{ ref('events') }}
    GROUP BY user_id
)
SELECT
    user_id,
    'unknown' AS age_group,
    'unknown' AS education,
    {% if gender_from_id -%}
    CASE WHEN suffix(user_id, '_M') THEN 'male' WHEN suffix(user_id, '_F') THEN 'female' ELSE 'unknown' END
    {%- else %}'unknown'{% endif %} AS gender,
    {% if consumption -%}
    CASE ntile(3) OVER (ORDER BY consumption_share, user_id) WHEN 1 THEN 'low' WHEN 2 THEN 'medium' ELSE 'high' END
    {%- else %}'unknown'{% endif %} AS consumption_level,
    CASE
        WHEN office_hours_share >= 0.5 THEN 'office-hours worker'
        WHEN night_share >= 0.3 THEN 'night-active (student or shift worker)'
        ELSE 'flexible schedule'
    END AS occupation,
    'unknown' AS age_group_source,
    'unknown' AS education_source,
    '{{ "inferred:user_id_suffix" if gender_from_id else "unknown" }}' AS gender_source,
    '{{ "inferred:consumption_intent_share_tertile" if consumption else "unknown" }}' AS consumption_level_source,
    'inferred:office_hours_and_night_share' AS occupation_source
FROM activity
ORDER BY user_id
