//! A bound on every agent call (all but `wait`, which lasts as long as the
//! process, and stdin, which lasts as long as the input): a short one for
//! calls that answer at once (kill, state, stats, ...), a long one for
//! those that set up containers and processes (seconds to minutes under an
//! emulated guest kernel). A guest that stops answering must not hang its
//! host-side user: the call fails with `DEADLINE_EXCEEDED`, and whoever
//! owns the VM learns of it (to stop the VM and clean up).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::Status;

/// How long a call may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallLimits {
    /// Calls that answer at once.
    pub quick: Duration,
    /// Calls that create containers or start processes.
    pub setup: Duration,
}

/// Which limit a call gets.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pace {
    Quick,
    Setup,
}

/// The limits and who to tell when a call missed one.
#[derive(Debug)]
pub(crate) struct CallDeadline {
    limits: CallLimits,
    missed: watch::Sender<Option<String>>,
}

/// Tells which call missed the deadline first.
pub type DeadlineMissed = watch::Receiver<Option<String>>;

impl CallDeadline {
    pub(crate) fn new(limits: CallLimits) -> (Arc<Self>, DeadlineMissed) {
        let (missed, receiver) = watch::channel(None);
        (Arc::new(Self { limits, missed }), receiver)
    }

    /// Runs `call`, failing it when its limit passes.
    pub(crate) async fn run<T>(
        &self,
        op: &'static str,
        pace: Pace,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let limit = match pace {
            Pace::Quick => self.limits.quick,
            Pace::Setup => self.limits.setup,
        };
        match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => {
                let what = format!(
                    "the guest agent did not answer {op} within {} s",
                    limit.as_secs_f64()
                );
                self.missed.send_if_modified(|first| {
                    let new = first.is_none();
                    first.get_or_insert_with(|| what.clone());
                    new
                });
                Err(Status::deadline_exceeded(what))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> impl Future<Output = Result<(), Status>> {
        std::future::pending()
    }

    #[tokio::test]
    async fn a_call_past_its_limit_fails_and_the_first_is_reported() {
        let (deadline, mut missed) = CallDeadline::new(CallLimits {
            quick: Duration::from_millis(20),
            setup: Duration::from_secs(3600),
        });
        let quick = deadline
            .run("check", Pace::Quick, async { Ok::<_, Status>(7) })
            .await;
        assert_eq!(quick.unwrap(), 7);
        assert!(missed.borrow().is_none());
        // A setup call has the long limit.
        let setup = deadline
            .run("create container", Pace::Setup, async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, Status>(())
            })
            .await;
        assert!(setup.is_ok());
        let stuck = deadline
            .run("kill container", Pace::Quick, pending())
            .await
            .unwrap_err();
        assert_eq!(stuck.code(), tonic::Code::DeadlineExceeded);
        assert!(stuck.message().contains("kill container"), "{stuck:?}");
        missed.changed().await.unwrap();
        let _ = deadline
            .run("pause container", Pace::Quick, pending())
            .await;
        let first = missed.borrow_and_update().clone().unwrap();
        assert!(first.contains("kill container"), "{first}");
        assert!(!missed.has_changed().unwrap());
    }
}
