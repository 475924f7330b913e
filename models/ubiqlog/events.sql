-- UbiqLog normalised events: one app-usage session per row, package mapped to an intent (hand seed, then custom_genre rule, then Google Play genre rule, else 'other')
WITH sessions AS (
    SELECT user_id, package, session_start
    FROM {{ ref('app_sessions') }}
),

-- one category row per package: prefer the row that carries a custom_genre, then a genre
categories AS (
    SELECT package, genre, custom_genre
    FROM (
        SELECT
            package,
            genre,
            custom_genre,
            row_number() OVER (
                PARTITION BY package
                ORDER BY custom_genre IS NULL, genre IS NULL, custom_genre, genre
            ) AS row_rank
        FROM (
            SELECT
                lower(trim(package)) AS package,
                nullif(lower(trim(genre)), '') AS genre,
                nullif(lower(trim(custom_genre)), '') AS custom_genre
            FROM {{ ref('raw_app_categories') }}
            WHERE package IS NOT NULL
        )
    )
    WHERE row_rank = 1
),

package_intents AS (
    SELECT lower(trim(package)) AS package, min(lower(trim(intent))) AS intent
    FROM {{ ref('seeds/ubiqlog_package_intents') }}
    WHERE package IS NOT NULL AND intent IS NOT NULL
    GROUP BY 1
),

genre_intents AS (
    SELECT
        lower(trim(source_column)) AS source_column,
        lower(trim(value)) AS value,
        min(lower(trim(intent))) AS intent
    FROM {{ ref('seeds/app_genre_intents') }}
    WHERE value IS NOT NULL AND intent IS NOT NULL
    GROUP BY 1, 2
),

mapped AS (
    SELECT
        s.user_id,
        s.session_start,
        s.package,
        coalesce(pi.intent, cgi.intent, gi.intent, 'other') AS intent
    FROM sessions AS s
    LEFT JOIN package_intents AS pi
        ON lower(s.package) = pi.package
    LEFT JOIN categories AS c
        ON lower(s.package) = c.package
    LEFT JOIN genre_intents AS cgi
        ON cgi.source_column = 'custom_genre' AND cgi.value = c.custom_genre
    LEFT JOIN genre_intents AS gi
        ON gi.source_column = 'genre' AND gi.value = c.genre
),

timed AS (
    SELECT
        user_id,
        session_start,
        {{ event_time_columns('session_start') }},
        package,
        intent
    FROM mapped
)

SELECT
    CAST(user_id AS VARCHAR) AS user_id,
    CAST(session_start AS TIMESTAMP) AS ts,
    CAST(weekday AS INTEGER) AS weekday,
    CAST(time_slot AS INTEGER) AS time_slot,
    CAST(package AS VARCHAR) AS location,
    CAST(intent AS VARCHAR) AS intent
FROM timed
ORDER BY user_id, ts, location
