-- Stage 4: time-varying state features in long form (stay_id, bin, feature, value).
--
-- Reads: cohort, grid, chart_sel, labevents, feature_items. Variables: bin_hours, trend_lag.
-- Creates: obs (observed bin values), medians (cohort median per feature),
--          feat_long (imputed value, trend and next-bin value of every feature and bin).
--
-- Per bin, vitals are means and GCS components and labs are the last value (feature_items.agg).
-- Unit conversion: value = (valuenum + shift) * scale, e.g. Fahrenheit to Celsius;
-- implausible converted values (outside [lo, hi]) are dropped as charting errors.
-- Imputation: sample-and-hold (last observed value of the stay), then the cohort median of the
-- observed bin values. Trend: x_t - x_{max(t - L, 0)}; next value: x_{t+1} (NULL at the last bin).

CREATE OR REPLACE TEMP TABLE obs AS
WITH chart AS (
    SELECT cs.stay_id, cs.charttime, fi.feature, fi.agg, fi.lo, fi.hi,
           (cs.valuenum + fi.shift) * fi.scale AS value
    FROM chart_sel AS cs
    JOIN feature_items AS fi ON fi.itemid = cs.itemid AND fi.source = 'chart'
    WHERE cs.stay_id IN (SELECT stay_id FROM cohort)
),
lab AS (
    -- labevents carry no stay_id: match on the patient and keep values inside the stay window
    SELECT c.stay_id, le.charttime, fi.feature, fi.agg, fi.lo, fi.hi,
           (le.valuenum + fi.shift) * fi.scale AS value
    FROM labevents AS le
    JOIN feature_items AS fi ON fi.itemid = le.itemid AND fi.source = 'lab'
    JOIN cohort AS c ON c.subject_id = le.subject_id
    WHERE le.valuenum IS NOT NULL
      AND le.charttime >= c.intime
      AND le.charttime < c.intime + to_seconds(c.n_bins * getvariable('bin_hours') * 3600.0)
),
events AS (
    SELECT
        ev.*,
        CAST(floor((epoch(ev.charttime) - epoch(c.intime)) / 3600.0 / getvariable('bin_hours'))
             AS BIGINT) AS bin,
        c.n_bins
    FROM (SELECT * FROM chart UNION ALL SELECT * FROM lab) AS ev
    JOIN cohort AS c ON c.stay_id = ev.stay_id
    WHERE ev.value BETWEEN ev.lo AND ev.hi
)
SELECT
    stay_id,
    bin,
    feature,
    CASE any_value(agg)
        WHEN 'mean' THEN avg(value)
        ELSE arg_max(value, charttime)
    END AS value
FROM events
WHERE bin >= 0 AND bin < n_bins
GROUP BY stay_id, bin, feature;

CREATE OR REPLACE TEMP TABLE medians AS
SELECT fi.feature, median(o.value) AS median
FROM (SELECT DISTINCT feature FROM feature_items) AS fi
LEFT JOIN obs AS o ON o.feature = fi.feature
GROUP BY fi.feature;

CREATE OR REPLACE TEMP TABLE feat_long AS
WITH dense AS (
    -- every (stay, bin) crossed with every measured feature; value NULL where not observed
    SELECT g.stay_id, g.bin, m.feature, o.value AS observed
    FROM grid AS g
    CROSS JOIN medians AS m
    LEFT JOIN obs AS o ON o.stay_id = g.stay_id AND o.bin = g.bin AND o.feature = m.feature
),
filled AS (
    -- sample-and-hold within the stay, then the cohort median
    SELECT
        d.stay_id,
        d.bin,
        d.feature,
        coalesce(
            last_value(d.observed IGNORE NULLS) OVER (
                PARTITION BY d.stay_id, d.feature ORDER BY d.bin
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
            ),
            m.median
        ) AS value
    FROM dense AS d
    JOIN medians AS m ON m.feature = d.feature
),
gcs AS (
    -- GCS total from its imputed components
    SELECT stay_id, bin, 'gcs' AS feature, sum(value) AS value
    FROM filled
    WHERE feature IN ('gcs_eye', 'gcs_verbal', 'gcs_motor')
    GROUP BY stay_id, bin
),
state AS (
    SELECT * FROM filled WHERE feature NOT IN ('gcs_eye', 'gcs_verbal', 'gcs_motor')
    UNION ALL
    SELECT * FROM gcs
),
sofa AS (
    -- SOFA-lite: 5 of the 6 SOFA organ scores from the imputed values (missing counts 0).
    -- Respiration is left out (no PaO2/FiO2 and ventilation), cardiovascular uses MAP < 70
    -- only (no vasopressor doses) and renal uses creatinine only (no urine output).
    SELECT stay_id, bin, 'sofa_lite' AS feature, CAST(sum(
        CASE feature
            WHEN 'platelets' THEN CASE
                WHEN value < 20 THEN 4 WHEN value < 50 THEN 3
                WHEN value < 100 THEN 2 WHEN value < 150 THEN 1 ELSE 0 END
            WHEN 'bilirubin' THEN CASE
                WHEN value >= 12 THEN 4 WHEN value >= 6 THEN 3
                WHEN value >= 2 THEN 2 WHEN value >= 1.2 THEN 1 ELSE 0 END
            WHEN 'mbp' THEN CASE WHEN value < 70 THEN 1 ELSE 0 END
            WHEN 'gcs' THEN CASE
                WHEN value < 6 THEN 4 WHEN value < 10 THEN 3
                WHEN value < 13 THEN 2 WHEN value < 15 THEN 1 ELSE 0 END
            WHEN 'creatinine' THEN CASE
                WHEN value >= 5 THEN 4 WHEN value >= 3.5 THEN 3
                WHEN value >= 2 THEN 2 WHEN value >= 1.2 THEN 1 ELSE 0 END
            ELSE 0
        END
    ) AS DOUBLE) AS value
    FROM state
    GROUP BY stay_id, bin
),
everything AS (
    SELECT * FROM state
    UNION ALL
    SELECT * FROM sofa
)
SELECT
    stay_id,
    bin,
    feature,
    value,
    value - coalesce(lag(value, getvariable('trend_lag')) OVER w, first_value(value) OVER w)
        AS trend,
    lead(value) OVER w AS next_value
FROM everything
WINDOW w AS (PARTITION BY stay_id, feature ORDER BY bin);
