//! The agent's cgroup v2 figures as containerd's `io.containerd.cgroups.v2.Metrics`
//! (what `ctr task metrics` and the CRI stats read).

use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::MessageField;
use vmrun_agent::proto::ContainerStatsResponse;

use crate::error::{Result, ShimError};

/// Converts the agent's stats; absent figures stay 0.
pub fn cgroup_v2(stats: &ContainerStatsResponse) -> Metrics {
    let io = (stats.io_read_bytes.is_some() || stats.io_write_bytes.is_some()).then(|| IOStat {
        usage: vec![IOEntry {
            rbytes: stats.io_read_bytes.unwrap_or_default(),
            wbytes: stats.io_write_bytes.unwrap_or_default(),
            ..Default::default()
        }],
        ..Default::default()
    });
    Metrics {
        pids: MessageField::some(PidsStat {
            current: stats.pids_current.unwrap_or_default(),
            limit: stats.pids_limit.unwrap_or_default(),
            ..Default::default()
        }),
        cpu: MessageField::some(CPUStat {
            usage_usec: stats.cpu_usage_usec.unwrap_or_default(),
            ..Default::default()
        }),
        memory: MessageField::some(MemoryStat {
            usage: stats.memory_usage_bytes.unwrap_or_default(),
            usage_limit: stats.memory_limit_bytes.unwrap_or_default(),
            ..Default::default()
        }),
        memory_events: MessageField::some(MemoryEvents {
            oom_kill: stats.oom_kills.unwrap_or_default(),
            ..Default::default()
        }),
        io: io.into(),
        ..Default::default()
    }
}

/// The metrics packed as containerd expects them in a StatsResponse.
pub fn cgroup_v2_any(stats: &ContainerStatsResponse) -> Result<Any> {
    containerd_shim::util::convert_to_any(Box::new(cgroup_v2(stats)))
        .map_err(|e| ShimError::InvalidArgument(format!("cannot encode metrics: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::Message;

    #[test]
    fn figures_land_in_the_cgroup_v2_fields() {
        let stats = ContainerStatsResponse {
            memory_usage_bytes: Some(4096),
            memory_limit_bytes: Some(1 << 20),
            cpu_usage_usec: Some(1500),
            pids_current: Some(3),
            pids_limit: Some(64),
            io_read_bytes: Some(10),
            io_write_bytes: None,
            oom_kills: Some(1),
        };
        let any = cgroup_v2_any(&stats).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let metrics = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(metrics.memory.usage, 4096);
        assert_eq!(metrics.memory.usage_limit, 1 << 20);
        assert_eq!(metrics.cpu.usage_usec, 1500);
        assert_eq!((metrics.pids.current, metrics.pids.limit), (3, 64));
        assert_eq!(metrics.io.usage[0].rbytes, 10);
        assert_eq!(metrics.memory_events.oom_kill, 1);
    }
}
