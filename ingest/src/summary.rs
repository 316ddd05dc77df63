//! The report printed when an ingest ends.
//!
//! It answers what a user asks right after a bulk import: did everything
//! get in, what was refused and why, and where do I follow the
//! classification from here. `--json` prints the same structure for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use indicatif::HumanBytes;
use serde::Serialize;
use uuid::Uuid;

/// One refused entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rejection {
    pub path: String,
    /// Short kind (`not-audio`, `unsafe-path`, …).
    pub kind: String,
    /// The reason as stored in `job_rejections.reason`.
    pub reason: String,
}

/// What one run of `ingest` did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub job_id: Uuid,
    /// Whether an earlier run of the same ingest (same inputs and options)
    /// had already opened this job.
    pub resumed: bool,
    /// Recordings that became new tasks in this run.
    pub accepted: u64,
    /// Entries whose content is another entry's of the same job.
    pub duplicate: u64,
    /// Entries an earlier run of this job had already made tasks for.
    pub already_done: u64,
    /// Entries refused in this run (see `rejections`).
    pub rejected: u64,
    /// Tasks an earlier, interrupted run left without a confirmed message,
    /// published by this run.
    pub republished: u64,
    /// Recordings given a species label in this run.
    pub labelled: u64,
    /// Bytes of the recordings accepted in this run.
    pub bytes_accepted: u64,
    /// Tasks the job has in total (all runs).
    pub job_tasks: u64,
    pub rejections: Vec<Rejection>,
    /// The query that follows the job's classification.
    pub follow_sql: String,
}

/// How many rejections the text summary lists one by one.
const LISTED: usize = 20;

impl Summary {
    /// The query that shows the job's progress.
    pub fn follow_sql_for(job: Uuid) -> String {
        format!("SELECT * FROM job_progress WHERE job_id = '{job}';")
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let job = self.job_id;
        let _ = writeln!(
            out,
            "job {job}{}",
            if self.resumed {
                " (resumed: an earlier run of this ingest was found)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "  accepted     {:>7}  ({}, {} labelled)",
            self.accepted,
            HumanBytes(self.bytes_accepted),
            self.labelled
        );
        let _ = writeln!(
            out,
            "  duplicate    {:>7}  (same content as another entry)",
            self.duplicate
        );
        let _ = writeln!(
            out,
            "  already done {:>7}  (handled by an earlier run)",
            self.already_done
        );
        let _ = writeln!(out, "  rejected     {:>7}", self.rejected);
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.rejections {
            *kinds.entry(r.kind.as_str()).or_default() += 1;
        }
        for (kind, n) in &kinds {
            let _ = writeln!(out, "    {kind:<16} {n:>7}");
        }
        if self.republished > 0 {
            let _ = writeln!(
                out,
                "  published {} task(s) an interrupted run had left unqueued",
                self.republished
            );
        }
        let _ = writeln!(out, "  the job has {} task(s) in total", self.job_tasks);
        if !self.rejections.is_empty() {
            let _ = writeln!(out, "rejected entries:");
            for r in self.rejections.iter().take(LISTED) {
                let _ = writeln!(out, "  {}: {}", r.path, r.reason);
            }
            if self.rejections.len() > LISTED {
                let _ = writeln!(
                    out,
                    "  … and {} more: SELECT path, reason FROM job_rejections WHERE job_id = '{job}';",
                    self.rejections.len() - LISTED
                );
            }
        }
        let _ = writeln!(out, "follow the classification with:");
        let _ = writeln!(out, "  {}", self.follow_sql);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lists_counts_reasons_and_the_query() {
        let job = Uuid::new_v4();
        let rejections: Vec<Rejection> = (0..25)
            .map(|i| Rejection {
                path: format!("/in/{i}.wav"),
                kind: "not-audio".into(),
                reason: "not-audio: nope".into(),
            })
            .collect();
        let s = Summary {
            job_id: job,
            resumed: true,
            accepted: 3,
            duplicate: 1,
            already_done: 2,
            rejected: 25,
            republished: 1,
            labelled: 3,
            bytes_accepted: 2048,
            job_tasks: 5,
            rejections,
            follow_sql: Summary::follow_sql_for(job),
        };
        let text = s.to_text();
        assert!(text.contains("resumed"), "{text}");
        assert!(text.contains("not-audio             25"), "{text}");
        assert!(text.contains("/in/19.wav"), "{text}");
        assert!(!text.contains("/in/20.wav"), "{text}");
        assert!(text.contains("and 5 more"), "{text}");
        assert!(text.contains(&format!("job_id = '{job}'")), "{text}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["already_done"], 2);
        assert_eq!(json["rejections"].as_array().unwrap().len(), 25);
    }
}
