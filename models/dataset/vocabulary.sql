-- The dataset's event vocabulary: every (location, intent) pair its events hold. No counts: every
-- LLM prompt carries the vocabulary, and counts would change it with any user's edit.
SELECT DISTINCT
    location,
    intent
FROM {{ ref('events') }}
ORDER BY location, intent
