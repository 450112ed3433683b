-- Stage 3: enteral feeds pro-rated over the 4-h bins, the final cohort and its bin grid.
--
-- Reads: candidates, inputevents, products. Variables: bin_hours, exclude_rewritten.
-- Creates: feed_rows (every enteral row of a candidate stay with a status),
--          feed_bins (nutrients per stay and bin), cohort (candidates that were fed), grid.
--
-- Pro-rating: an infusion of A mL over [s, e) gives bin b = [bH, (b+1)H) (hours since intime)
--   A * |[s, e) ∩ [bH, (b+1)H)| / (e - s) mL;  a row with e = s (a bolus) goes whole to the bin
--   holding s. Parts outside [0, n_bins * H) fall outside the decision window and are dropped.
-- Per mL of a formula at strength σ: kcal = σ·kcal_per_ml, protein g = σ·protein_g_per_l/1000,
--   free water mL = σ·water_ml_per_l/1000 + (1 - σ)  (a diluted feed is formula plus water).
--   Powders (products.unit = 'g', e.g. Beneprotein) use the same columns per g and per kg;
--   they add to kcal and protein but not to en_ml.

CREATE OR REPLACE TEMP TABLE feed_rows AS
SELECT
    ie.stay_id,
    ie.itemid,
    ie.starttime,
    ie.endtime,
    ie.amount,
    ie.amountuom,
    p.unit,
    p.strength,
    p.kcal_per_ml,
    p.protein_g_per_l,
    p.water_ml_per_l,
    CASE
        WHEN p.itemid IS NULL THEN 'unmapped_item'
        WHEN getvariable('exclude_rewritten') AND ie.statusdescription = 'Rewritten'
            THEN 'rewritten'
        WHEN ie.starttime IS NULL OR ie.endtime IS NULL THEN 'missing_time'
        WHEN ie.endtime < ie.starttime THEN 'end_before_start'
        WHEN ie.amount IS NULL OR ie.amount <= 0 THEN 'nonpositive_amount'
        WHEN NOT list_contains(p.accepted_uoms, lower(trim(ie.amountuom))) THEN 'unit_mismatch'
        ELSE 'ok'
    END AS status
FROM inputevents AS ie
LEFT JOIN products AS p ON p.itemid = ie.itemid
WHERE ie.stay_id IN (SELECT stay_id FROM candidates)
  AND (p.itemid IS NOT NULL OR ie.ordercategoryname = '13-Enteral Nutrition');

CREATE OR REPLACE TEMP TABLE feed_bins AS
WITH feeds AS (
    -- valid rows with start and end in hours since intime
    SELECT
        f.*,
        c.n_bins,
        (epoch(f.starttime) - epoch(c.intime)) / 3600.0 AS s_h,
        (epoch(f.endtime) - epoch(c.intime)) / 3600.0 AS e_h
    FROM feed_rows AS f
    JOIN candidates AS c ON c.stay_id = f.stay_id
    WHERE f.status = 'ok'
),
spans AS (
    -- first and last bin touched; [s, e) ends in bin ceil(e/H) - 1, a bolus sits in bin floor(s/H)
    SELECT
        *,
        CAST(floor(s_h / getvariable('bin_hours')) AS BIGINT) AS b_first,
        CAST(
            CASE
                WHEN e_h > s_h THEN ceil(e_h / getvariable('bin_hours')) - 1
                ELSE floor(s_h / getvariable('bin_hours'))
            END AS BIGINT
        ) AS b_last
    FROM feeds
),
pieces AS (
    -- one row per (feed, bin) inside the decision window
    SELECT
        *,
        unnest(generate_series(greatest(b_first, 0), least(b_last, n_bins - 1))) AS bin
    FROM spans
    WHERE b_last >= 0 AND b_first <= n_bins - 1
),
portions AS (
    SELECT
        stay_id,
        bin,
        s_h,
        unit,
        strength,
        kcal_per_ml,
        protein_g_per_l,
        water_ml_per_l,
        amount * CASE
            WHEN e_h > s_h THEN
                (least(e_h, (bin + 1) * getvariable('bin_hours'))
                 - greatest(s_h, bin * getvariable('bin_hours'))) / (e_h - s_h)
            ELSE 1.0
        END AS qty  -- mL, or g for a powder (products.unit)
    FROM pieces
)
SELECT
    stay_id,
    bin,
    sum(qty) AS quantity,
    coalesce(sum(qty) FILTER (WHERE unit = 'mL'), 0.0) AS en_ml,
    sum(qty * strength * kcal_per_ml) AS kcal,
    sum(qty * strength * protein_g_per_l / 1000.0) AS protein_g,
    sum(qty * (strength * water_ml_per_l / 1000.0 + (1.0 - strength))) AS water_ml,
    min(s_h) AS first_start_h
FROM portions
GROUP BY stay_id, bin;

CREATE OR REPLACE TEMP TABLE cohort AS
SELECT c.*, greatest(fed.first_start_h, 0.0) AS en_start_hours
FROM candidates AS c
LEFT JOIN (
    SELECT stay_id, min(first_start_h) AS first_start_h
    FROM feed_bins
    WHERE quantity > 0
    GROUP BY stay_id
) AS fed ON fed.stay_id = c.stay_id
WHERE fed.stay_id IS NOT NULL OR NOT getvariable('require_enteral');

CREATE OR REPLACE TEMP TABLE grid AS
SELECT
    stay_id,
    unnest(generate_series(0, n_bins - 1)) AS bin
FROM cohort;
