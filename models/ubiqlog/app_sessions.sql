-- UbiqLog app-usage sessions: raw process spans minus system/background processes, same-package spans of a user merged when the gap is <= session_gap_seconds
WITH spans AS (
    SELECT
        user_id,
        location AS package,
        ts AS span_start,
        greatest(end_ts, ts) AS span_end,
        source_row
    FROM {{ ref('raw_events') }}
    WHERE user_id IS NOT NULL
      AND location IS NOT NULL
      AND ts IS NOT NULL
      AND end_ts IS NOT NULL
),

system_packages AS (
    SELECT DISTINCT lower(trim(package)) AS package
    FROM {{ ref('seeds/ubiqlog_system_packages') }}
    WHERE package IS NOT NULL
),

app_spans AS (
    SELECT s.*
    FROM spans AS s
    LEFT JOIN system_packages AS sp
        ON lower(s.package) = sp.package
    WHERE sp.package IS NULL
      AND NOT (
        -- the OS itself
           lower(s.package) IN ('android', 'system', 'com.android.systemui')
        OR lower(s.package) LIKE 'android.process.%'    -- android.process.acore, android.process.media ...
        -- sub-processes ("app:remote", ":service", ":push", ":sandboxed_process0", "system:ui"):
        -- helpers of an app whose main process is logged on its own when the app is in use
        OR s.package LIKE '%:%'
        -- content providers, background services, push/sync/update agents
        OR lower(s.package) LIKE '%provider%'
        OR lower(s.package) LIKE '%service'             -- com.lge.atservice, ...FlashBarService
        OR lower(s.package) LIKE '%.service%'           -- com.qualcomm.services.location (not ir.mservices.market)
        OR lower(s.package) LIKE '%daemon%'
        OR lower(s.package) LIKE '%push%'
        OR lower(s.package) LIKE 'com.google.process.%' -- com.google.process.location, .gapps
        OR lower(s.package) LIKE 'com.motorola.process.%'
        OR lower(s.package) LIKE '%.sync%'
        OR lower(s.package) LIKE '%syncadapter%'
        OR lower(s.package) LIKE '%fota%'               -- firmware-over-the-air updaters
        OR lower(s.package) LIKE '%omadm%'
        OR lower(s.package) LIKE '%syncml%'
        OR lower(s.package) LIKE '%agent'
        OR lower(s.package) LIKE '%.server%'            -- com.lge.systemserver, com.android.server.telecom
        OR lower(s.package) LIKE '%systemserver%'
        OR lower(s.package) LIKE '%.system'
        OR lower(s.package) LIKE '%sysscope%'
        OR lower(s.package) LIKE '%knox%'
        -- Google Play services and framework
        OR lower(s.package) LIKE 'com.google.android.gms%'
        OR lower(s.package) LIKE 'com.google.android.gsf%'
        -- home screens, lock screens, widgets, wallpapers
        OR lower(s.package) LIKE '%launcher%'
        OR lower(s.package) LIKE '%.home'
        OR lower(s.package) LIKE '%idlescreen%'
        OR lower(s.package) LIKE '%keyguard%'
        OR lower(s.package) LIKE '%lockscreen%'
        OR lower(s.package) LIKE '%widget%'
        OR lower(s.package) LIKE '%wallpaper%'
        -- radios and connectivity stacks
        OR lower(s.package) LIKE '%.nfc%'
        OR lower(s.package) LIKE '%bluetooth%'
        OR lower(s.package) LIKE '%.bt.%'
        OR lower(s.package) LIKE '%avrcp%'
        OR lower(s.package) LIKE '%telephony%'
        -- keyboards and input methods
        OR lower(s.package) LIKE '%inputmethod%'
        OR lower(s.package) LIKE '%keyboard%'
        OR lower(s.package) LIKE '%.ime'
        OR lower(s.package) LIKE '%htcime%'
        OR lower(s.package) LIKE '%latinime%'
        OR lower(s.package) LIKE '%swiftkey%'
        -- setup, installers, factory and test tools
        OR lower(s.package) LIKE '%setupwizard%'
        OR lower(s.package) LIKE '%partnersetup%'
        OR lower(s.package) LIKE '%packageinstaller%'
        OR lower(s.package) LIKE '%.factory'            -- com.sec.factory (not uk.co.aifactory.* games)
        OR lower(s.package) LIKE '%factorymode%'
      )
),

ordered AS (
    SELECT
        *,
        max(span_end) OVER (
            PARTITION BY user_id, package
            ORDER BY span_start, span_end, source_row
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS previous_end
    FROM app_spans
),

flagged AS (
    SELECT
        *,
        CASE
            WHEN previous_end IS NULL THEN 1
            WHEN span_start > previous_end + to_seconds({{ var('session_gap_seconds') }}) THEN 1
            ELSE 0
        END AS starts_session
    FROM ordered
),

numbered AS (
    SELECT
        *,
        sum(starts_session) OVER (
            PARTITION BY user_id, package
            ORDER BY span_start, span_end, source_row
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS session_no
    FROM flagged
)

SELECT
    user_id,
    package,
    min(span_start) AS session_start,
    max(span_end) AS session_end,
    CAST(count(*) AS INTEGER) AS n_spans,
    CAST(date_diff('second', min(span_start), max(span_end)) AS DOUBLE) AS duration_s
FROM numbered
GROUP BY user_id, package, session_no
ORDER BY user_id, session_start, package
