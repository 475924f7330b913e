-- The dataset's event vocabulary: every (location, intent) pair with how often and by how many users it occurs.
SELECT
    location,
    intent,
    count(*) AS events,
    count(DISTINCT user_id) AS users
FROM {{ ref('events') }}
GROUP BY location, intent
ORDER BY events DESC, location, intent
