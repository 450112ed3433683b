-- Stage 2: the chart events we need (one scan of chartevents) and one body weight per stay.
--
-- Reads: eligible, chartevents, inputevents, feature_items (chart rows).
-- Variables: min_weight_kg, max_weight_kg.
-- Creates: chart_sel (chart events of eligible stays, feature and weight items only),
--          candidates (eligible stays with a plausible weight, weight_kg added).

CREATE OR REPLACE TEMP TABLE chart_sel AS
SELECT ce.stay_id, ce.charttime, ce.itemid, ce.valuenum
FROM chartevents AS ce
JOIN eligible AS e ON e.stay_id = ce.stay_id
WHERE ce.valuenum IS NOT NULL
  AND (
      ce.itemid IN (SELECT itemid FROM feature_items WHERE source = 'chart')
      OR ce.itemid IN (226512, 224639)  -- Admission Weight (Kg), Daily Weight
  );

CREATE OR REPLACE TEMP TABLE candidates AS
WITH plausible AS (
    SELECT getvariable('min_weight_kg') AS lo, getvariable('max_weight_kg') AS hi
),
input_weight AS (
    -- inputevents.patientweight: the weight the ICU used for dosing; take the earliest one
    SELECT ie.stay_id, arg_min(ie.patientweight, ie.starttime) AS kg
    FROM inputevents AS ie, plausible
    WHERE ie.stay_id IN (SELECT stay_id FROM eligible)
      AND ie.patientweight BETWEEN plausible.lo AND plausible.hi
    GROUP BY ie.stay_id
),
chart_weight AS (
    -- fallback: the earliest admission weight, else the earliest daily weight
    SELECT cs.stay_id, arg_min(cs.valuenum, (cs.itemid <> 226512, cs.charttime)) AS kg
    FROM chart_sel AS cs, plausible
    WHERE cs.itemid IN (226512, 224639)
      AND cs.valuenum BETWEEN plausible.lo AND plausible.hi
    GROUP BY cs.stay_id
)
SELECT e.*, coalesce(iw.kg, cw.kg) AS weight_kg
FROM eligible AS e
LEFT JOIN input_weight AS iw ON iw.stay_id = e.stay_id
LEFT JOIN chart_weight AS cw ON cw.stay_id = e.stay_id
WHERE coalesce(iw.kg, cw.kg) IS NOT NULL;
