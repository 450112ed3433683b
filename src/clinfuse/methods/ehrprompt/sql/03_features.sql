-- Stage 3: vitals and labs of the first window_hours of each cohort stay, aggregated.
--
-- Reads: cohort, chartevents, labevents, items (feature, source, itemid, shift, scale),
--        features (feature, lo, hi). Variables: window_hours, lab_lookback_hours.
-- Creates: events (stay_id, feature, value: converted, plausible, inside the window),
--          feature_agg (stay_id, feature, mean, min, max, n).
-- Windows are half-open in hours since intime: chart [0, window), lab [-lookback, window).

CREATE OR REPLACE TEMP TABLE events AS
WITH chart AS (
    SELECT c.stay_id, i.feature, (c.valuenum + i.shift) * i.scale AS value
    FROM chartevents AS c
    JOIN items AS i ON i.source = 'chart' AND i.itemid = c.itemid
    JOIN cohort AS s ON s.stay_id = c.stay_id
    WHERE c.valuenum IS NOT NULL
      AND (epoch(c.charttime) - epoch(s.intime)) / 3600.0 >= 0
      AND (epoch(c.charttime) - epoch(s.intime)) / 3600.0 < getvariable('window_hours')
),
lab AS (
    -- labs are hospital-wide (no stay id): matched by patient and time, as in mimic-code
    SELECT s.stay_id, i.feature, (l.valuenum + i.shift) * i.scale AS value
    FROM labevents AS l
    JOIN items AS i ON i.source = 'lab' AND i.itemid = l.itemid
    JOIN cohort AS s ON s.subject_id = l.subject_id
    WHERE l.valuenum IS NOT NULL
      AND (epoch(l.charttime) - epoch(s.intime)) / 3600.0 >= -getvariable('lab_lookback_hours')
      AND (epoch(l.charttime) - epoch(s.intime)) / 3600.0 < getvariable('window_hours')
)
SELECT e.stay_id, e.feature, e.value
FROM (SELECT * FROM chart UNION ALL SELECT * FROM lab) AS e
JOIN features AS f ON f.feature = e.feature
-- plausibility: lo < value <= hi after unit conversion (charting errors are dropped)
WHERE e.value > f.lo AND e.value <= f.hi;

CREATE OR REPLACE TEMP TABLE feature_agg AS
SELECT stay_id, feature, avg(value) AS mean, min(value) AS min, max(value) AS max, count(*) AS n
FROM events
GROUP BY stay_id, feature;
