//! Delivery reports on their way back to the publishing nodes, one message
//! per publishing node for all the reports that queued up together.
//!
//! A node that receives a burst of publishes (Redis hands its subscription
//! link several in one read, as happens under load) used to answer each with
//! its own `PUBLISH` of a [`Wire::Report`]: one task, one Redis command, one
//! pub/sub message for the publisher to parse, per publish. Now the first
//! report queued schedules one send, and every report queued before that send
//! runs goes with it, as a [`Wire::Reports`] (a single one still goes as a
//! `Report`, which every node reads). Nothing waits to fill a batch: a report
//! leaves as soon as the scheduled send runs, after the link's current burst.
//!
//! Bound: what queues here is what the subscription link handled since the
//! last send was scheduled, at most one burst of messages; each send takes
//! all of it.

use super::wire::Wire;
use parking_lot::Mutex;

/// Test-only pause point (feature `test-hooks`): while the file named by
/// this variable exists, a node holds the reports it queued, so a test can
/// make several queue up together.
pub const HOLD_ENV: &str = "CONNMIX_TEST_HOLD_REPORTS";

/// One report: publish `req` delivered to `s` subscribers and failed `f`.
pub type Report = (u64, u64, u64);

/// Reports waiting to be sent, by publishing node.
#[derive(Default)]
pub struct OutgoingReports {
    queued: Mutex<Queued>,
}

#[derive(Default)]
struct Queued {
    /// Few nodes publish at once: a vector, not a map.
    by_node: Vec<(u32, Vec<Report>)>,
    /// A send is scheduled and has not taken the queue yet.
    scheduled: bool,
}

impl OutgoingReports {
    /// Queues a report for node `to`; `true` when the caller must schedule a
    /// send ([`OutgoingReports::take`]), `false` when one is already due.
    pub fn add(&self, to: u32, report: Report) -> bool {
        let mut q = self.queued.lock();
        match q.by_node.iter_mut().find(|(n, _)| *n == to) {
            Some((_, reports)) => reports.push(report),
            None => q.by_node.push((to, vec![report])),
        }
        !std::mem::replace(&mut q.scheduled, true)
    }

    /// Takes everything queued: one message from node `from` per node
    /// reported to. A report queued after this schedules the next send.
    pub fn take(&self, from: u32) -> Vec<(u32, Wire)> {
        let by_node = {
            let mut q = self.queued.lock();
            q.scheduled = false;
            std::mem::take(&mut q.by_node)
        };
        by_node
            .into_iter()
            .map(|(to, mut reports)| {
                let msg = match reports.as_slice() {
                    [(req, s, f)] => Wire::Report {
                        from,
                        req: *req,
                        s: *s,
                        f: *f,
                    },
                    _ => {
                        reports.shrink_to_fit();
                        Wire::Reports { from, reports }
                    }
                };
                (to, msg)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_queued_together_leave_as_one_message_per_node() {
        let out = OutgoingReports::default();
        assert!(out.add(1, (10, 5, 0)), "the first report schedules a send");
        assert!(!out.add(2, (11, 1, 0)), "a send is already due");
        assert!(!out.add(1, (12, 3, 1)));
        let sent = out.take(7);
        assert_eq!(
            sent,
            vec![
                (
                    1,
                    Wire::Reports {
                        from: 7,
                        reports: vec![(10, 5, 0), (12, 3, 1)]
                    }
                ),
                (
                    2,
                    Wire::Report {
                        from: 7,
                        req: 11,
                        s: 1,
                        f: 0
                    }
                ),
            ]
        );
        // Taken: the next report schedules the next send, alone in it.
        assert!(out.add(1, (13, 1, 0)));
        assert_eq!(
            out.take(7),
            vec![(
                1,
                Wire::Report {
                    from: 7,
                    req: 13,
                    s: 1,
                    f: 0
                }
            )]
        );
        assert!(out.take(7).is_empty());
    }

    #[test]
    fn a_report_queued_while_a_send_runs_schedules_another() {
        let out = OutgoingReports::default();
        assert!(out.add(1, (1, 1, 0)));
        let first = out.take(7);
        // The first send is on its way (awaiting Redis); a new report must
        // not wait for it to finish.
        assert!(out.add(1, (2, 1, 0)));
        assert_eq!(first.len(), 1);
        assert_eq!(out.take(7).len(), 1);
    }
}
