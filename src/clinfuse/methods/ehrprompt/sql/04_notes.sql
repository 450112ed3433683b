-- Stage 4: the notes charted in the first window_hours of each cohort stay, concatenated.
--
-- Reads: cohort, notes (subject_id, charttime, category, note_key, text), note_categories
--        (allowed lower-case categories; empty = all). Variables: window_hours.
-- Creates: stay_notes (stay_id, notes, n_notes).
-- Discharge summaries are never used (written after the stay: they state the outcome), and
-- notes without a charttime (MIMIC-III ECG/echo reports, most discharge summaries) cannot be
-- placed in the window, so they are left out too.

CREATE OR REPLACE TEMP TABLE stay_notes AS
SELECT
    s.stay_id,
    string_agg(trim(n.text), chr(10) || chr(10) ORDER BY n.charttime, n.note_key) AS notes,
    count(*) AS n_notes
FROM notes AS n
JOIN cohort AS s ON s.subject_id = n.subject_id
WHERE n.charttime IS NOT NULL
  AND (epoch(n.charttime) - epoch(s.intime)) / 3600.0 >= 0
  AND (epoch(n.charttime) - epoch(s.intime)) / 3600.0 < getvariable('window_hours')
  AND lower(trim(coalesce(n.category, ''))) NOT IN ('discharge summary', 'discharge')
  AND (
      (SELECT count(*) FROM note_categories) = 0
      OR lower(trim(n.category)) IN (SELECT category FROM note_categories)
  )
  AND trim(coalesce(n.text, '')) <> ''
GROUP BY s.stay_id;
