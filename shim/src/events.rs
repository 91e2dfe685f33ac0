//! Task events for containerd (TaskCreate, TaskExit, ...), sent in the
//! background so no RPC waits on containerd's event service.

use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::event::Event;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Context;

/// containerd's events endpoint, for one namespace.
#[derive(Clone)]
pub struct Events {
    publisher: Arc<RemotePublisher>,
    namespace: String,
}

impl Events {
    pub fn new(publisher: RemotePublisher, namespace: &str) -> Self {
        Self {
            publisher: Arc::new(publisher),
            namespace: namespace.to_string(),
        }
    }

    pub fn publish<E: Event + Send + 'static>(&self, event: E) {
        let publisher = Arc::clone(&self.publisher);
        let namespace = self.namespace.clone();
        let topic = event.topic();
        tokio::spawn(async move {
            if let Err(e) = publisher
                .publish(Context::default(), &topic, &namespace, Box::new(event))
                .await
            {
                tracing::warn!("cannot publish {topic}: {e}");
            }
        });
    }
}

/// A protobuf timestamp of `time`.
pub fn timestamp(time: SystemTime) -> Timestamp {
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    ts.nanos = i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0);
    ts
}
