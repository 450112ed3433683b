-- Stage 1: every ICU stay with its inclusion flags and outcomes.
--
-- Reads the views patients, admissions, icustays.
-- Variables: min_age, min_stay_hours, max_hours, bin_hours, first_stay_only.
-- Creates: stays (one row per ICU stay), eligible (stays passing age, first stay and length).

CREATE OR REPLACE TEMP TABLE stays AS
WITH ranked AS (
    -- order each patient's ICU stays by time; stay_seq 1 is the first ICU stay
    SELECT
        ic.*,
        row_number() OVER (PARTITION BY ic.subject_id ORDER BY ic.intime, ic.stay_id) AS stay_seq
    FROM icustays AS ic
),
base AS (
    SELECT
        r.subject_id,
        r.hadm_id,
        r.stay_id,
        r.intime,
        r.outtime,
        r.stay_seq,
        (epoch(r.outtime) - epoch(r.intime)) / 3600.0 AS los_hours,
        -- MIMIC-IV shifts dates per patient: age at the stay = anchor_age + years since anchor_year
        p.anchor_age + (year(r.intime) - p.anchor_year) AS age,
        CASE WHEN p.gender = 'M' THEN 1.0 ELSE 0.0 END AS male,
        coalesce(a.hospital_expire_flag, 0) = 1 AS death_in_hospital,
        -- exact time for in-hospital deaths, otherwise midnight of the date of death (dod)
        coalesce(a.deathtime, CAST(p.dod AS TIMESTAMP)) AS death_time
    FROM ranked AS r
    JOIN patients AS p ON p.subject_id = r.subject_id
    LEFT JOIN admissions AS a ON a.hadm_id = r.hadm_id
)
SELECT
    *,
    coalesce(death_time <= intime + INTERVAL 90 DAY, FALSE) AS death_90d,
    (epoch(death_time) - epoch(intime)) / 3600.0 AS death_hours,
    los_hours > getvariable('max_hours') AS truncated,
    -- decision bins: the stay, capped at max_hours, cut into bin_hours steps from intime
    CAST(ceil(least(los_hours, getvariable('max_hours')) / getvariable('bin_hours')) AS BIGINT)
        AS n_bins
FROM base;

CREATE OR REPLACE TEMP TABLE eligible AS
SELECT *
FROM stays
WHERE age >= getvariable('min_age')
  AND (stay_seq = 1 OR NOT getvariable('first_stay_only'))
  AND los_hours >= getvariable('min_stay_hours')
  AND n_bins >= 1;
