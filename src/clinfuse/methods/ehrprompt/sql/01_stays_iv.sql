-- Stage 1 (MIMIC-IV): every ICU stay with age, sex, admission type and the outcome flag.
--
-- Reads the views patients, admissions, icustays (lower-case columns, typed by mimic.py).
-- Creates: stays (one row per ICU stay; seq_in_admission 1 = the admission's first ICU stay).

CREATE OR REPLACE TEMP TABLE stays AS
SELECT
    ic.subject_id,
    ic.hadm_id,
    ic.stay_id,
    ic.intime,
    ic.outtime,
    ic.first_careunit,
    (epoch(ic.outtime) - epoch(ic.intime)) / 3600.0 AS los_hours,
    -- MIMIC-IV shifts dates per patient: age at the stay = anchor_age + years since anchor_year
    -- (anchor_age is capped at 91 for patients older than 89)
    CAST(p.anchor_age + (year(ic.intime) - p.anchor_year) AS DOUBLE) AS age,
    p.gender,
    a.admission_type,
    a.hospital_expire_flag,
    row_number() OVER (PARTITION BY ic.hadm_id ORDER BY ic.intime, ic.stay_id) AS seq_in_admission
FROM icustays AS ic
JOIN patients AS p ON p.subject_id = ic.subject_id
LEFT JOIN admissions AS a ON a.hadm_id = ic.hadm_id;
