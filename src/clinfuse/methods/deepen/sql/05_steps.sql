-- Stage 5: one row per (stay, bin): keys, static features, EN doses, feeding history,
-- time-varying features (value, trend, next value, pivoted to columns), outcome.
--
-- Reads: cohort, grid, feed_bins, feat_long. Variables: bin_hours.
-- Creates: feat_wide; the final SELECT is the result (column names are tidied in Python).

CREATE OR REPLACE TEMP TABLE feat_wide AS
PIVOT feat_long
ON feature
USING first(value) AS v, first(trend) AS d, first(next_value) AS n
GROUP BY stay_id, bin;

WITH feeding AS (
    -- this bin's EN per kg (the action) and what came before it (the feeding history)
    SELECT
        g.stay_id,
        g.bin,
        coalesce(fb.en_ml, 0.0) AS en_ml,
        coalesce(fb.kcal, 0.0) / c.weight_kg AS kcal_kg,
        coalesce(fb.protein_g, 0.0) / c.weight_kg AS protein_g_kg,
        coalesce(fb.water_ml, 0.0) / c.weight_kg AS water_ml_kg
    FROM grid AS g
    JOIN cohort AS c ON c.stay_id = g.stay_id
    LEFT JOIN feed_bins AS fb ON fb.stay_id = g.stay_id AND fb.bin = g.bin
),
history AS (
    SELECT
        *,
        coalesce(lag(kcal_kg) OVER w, 0.0) AS prev_kcal_kg,
        coalesce(lag(protein_g_kg) OVER w, 0.0) AS prev_protein_g_kg,
        coalesce(lag(water_ml_kg) OVER w, 0.0) AS prev_water_ml_kg,
        coalesce(sum(kcal_kg) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0.0)
            AS cum_kcal_kg,
        coalesce(sum(protein_g_kg) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0.0)
            AS cum_protein_g_kg
    FROM feeding
    WINDOW w AS (PARTITION BY stay_id ORDER BY bin)
)
SELECT
    c.stay_id,
    c.subject_id,
    c.hadm_id,
    h.bin,
    h.bin * getvariable('bin_hours') AS hours,
    c.intime + to_seconds(h.bin * getvariable('bin_hours') * 3600.0) AS bin_start,
    c.age,
    c.male,
    c.weight_kg,
    h.en_ml,
    h.kcal_kg,
    h.protein_g_kg,
    h.water_ml_kg,
    h.prev_kcal_kg,
    h.prev_protein_g_kg,
    h.prev_water_ml_kg,
    h.cum_kcal_kg,
    h.cum_protein_g_kg,
    CASE
        WHEN c.en_start_hours IS NULL THEN 0.0
        ELSE greatest(h.bin * getvariable('bin_hours') - c.en_start_hours, 0.0)
    END AS hours_since_en_start,
    fw.* EXCLUDE (stay_id, bin),
    h.bin = c.n_bins - 1 AS last_bin,
    c.truncated,
    c.los_hours,
    c.death_in_hospital,
    c.death_90d,
    c.death_hours
FROM history AS h
JOIN cohort AS c ON c.stay_id = h.stay_id
JOIN feat_wide AS fw ON fw.stay_id = h.stay_id AND fw.bin = h.bin
ORDER BY c.stay_id, h.bin;
