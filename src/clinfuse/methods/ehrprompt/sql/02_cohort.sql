-- Stage 2: the cohort, one row per kept ICU stay (both MIMIC versions).
--
-- Reads: stays. Variables: min_age, min_stay_hours.
-- Creates: cohort (the admission's first ICU stay, adult, long enough, outcome known).

CREATE OR REPLACE TEMP TABLE cohort AS
SELECT
    subject_id,
    hadm_id,
    stay_id,
    intime,
    outtime,
    age,
    CASE upper(trim(gender)) WHEN 'M' THEN 'male' WHEN 'F' THEN 'female' END AS sex,
    admission_type,
    first_careunit,
    CAST(hospital_expire_flag AS BIGINT) AS mortality,
    los_hours / 24.0 AS los_days
FROM stays
WHERE seq_in_admission = 1
  AND age >= getvariable('min_age')
  AND los_hours >= getvariable('min_stay_hours')
  AND hospital_expire_flag IS NOT NULL;
