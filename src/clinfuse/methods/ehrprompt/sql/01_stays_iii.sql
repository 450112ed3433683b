-- Stage 1 (MIMIC-III): every ICU stay with age, sex, admission type and the outcome flag.
--
-- Reads the views patients, admissions, icustays (lower-case columns, typed by mimic.py).
-- Variables: shifted_age (the age reported for patients older than 89).
-- Creates: stays (one row per ICU stay; seq_in_admission 1 = the admission's first ICU stay).

CREATE OR REPLACE TEMP TABLE stays AS
WITH base AS (
    SELECT
        ic.*,
        -- years between date of birth and ICU admission (mean Gregorian year of 365.2425 days)
        (epoch(ic.intime) - epoch(p.dob)) / 31556952.0 AS raw_age,
        p.gender,
        a.admission_type,
        a.hospital_expire_flag
    FROM icustays AS ic
    JOIN patients AS p ON p.subject_id = ic.subject_id
    LEFT JOIN admissions AS a ON a.hadm_id = ic.hadm_id
)
SELECT
    subject_id,
    hadm_id,
    stay_id,
    intime,
    outtime,
    first_careunit,
    (epoch(outtime) - epoch(intime)) / 3600.0 AS los_hours,
    -- MIMIC-III moves the date of birth of patients older than 89 by 300 years: their raw age
    -- is about 300, reported here as getvariable('shifted_age') (91.4, the documented median)
    CASE WHEN raw_age > 200 THEN getvariable('shifted_age') ELSE raw_age END AS age,
    gender,
    admission_type,
    hospital_expire_flag,
    row_number() OVER (PARTITION BY hadm_id ORDER BY intime, stay_id) AS seq_in_admission
FROM base;
