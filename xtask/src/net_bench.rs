//! `cargo xtask bench-net`: what a pod's network costs under vmrun against
//! runc, in the same run, through one private containerd's CRI plugin (the
//! test fixture's). Under runc the pod's CNI veth is the container's
//! interface; under vmrun the same veth is joined by tc mirred redirects to
//! a tap that the VMM serves as virtio-net to the guest's eth0, so every
//! figure's gap is that path plus the guest's own stack.
//!
//! From the fixture's network namespace (where the CNI bridge is) to the
//! pod's CNI address, for each runtime with one pod up at a time (so an idle
//! guest's cost is not in runc's figures):
//! - TCP throughput: N MiB into `nc -l` in the pod, timed until the pod has
//!   read them all (it closes the connection only after our FIN);
//! - request/response latency: sequential `GET /` to busybox httpd, each
//!   on a new connection, so each includes the TCP handshake;
//! - for vmrun, the host CPU time of the VMM per MiB of the throughput runs
//!   (its vCPU threads run the guest's TCP stack, its device thread the
//!   virtio-net queues: both are what the pod costs the host).
//!
//! Prints figures; asserts nothing.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use vmrun_tests::cni::CniAttachment;

use crate::measure::load_average;
use vmrun_tests::containerd::{shim_binary, Containerd, IMAGE, SHIM_BINARY, VMRUN_HANDLER};
use vmrun_tests::cri::CriClient;

#[derive(Args)]
pub struct NetBenchArgs {
    /// MiB sent per throughput run.
    #[arg(long, default_value_t = 64)]
    mib: u64,
    /// Throughput runs per runtime (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Sequential `GET /` requests per runtime.
    #[arg(long, default_value_t = 50)]
    requests: usize,
}

/// The pod's `nc -l` sink.
const SINK_PORT: u16 = 5001;
/// The pod's busybox httpd.
const WEB_PORT: u16 = 8080;

/// Each listener in turn reads one connection to its end and exits. Its
/// stdin is a pipe that never ends: busybox nc shuts down its sending side
/// as soon as stdin ends (a CRI container's stdin is /dev/null), which would
/// hand the sender its EOF before the data was read. `sh -c` because the
/// image has no `nc` link; busybox's shell runs its applets by name.
fn sink_script() -> String {
    format!("sleep 2147483647 | while :; do nc -l -p {SINK_PORT} > /dev/null; done")
}

/// A one-line page: the requests measure round trips, not bandwidth.
fn web_script() -> String {
    format!("mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p {WEB_PORT} -h /www")
}

/// How long a pod's server may take to listen after its container started
/// (a guest on an emulated host is slow to run its first process).
const READY_DEADLINE: Duration = Duration::from_secs(300);
/// A socket operation that makes no progress for this long ends the run: a
/// stuck pod must not stall the benchmark.
const STALL: Duration = Duration::from_secs(120);
/// MiB sent, unmeasured, before the runs: ARP, the listener's first start
/// and TCP's initial window are not what the runs are about.
const WARMUP_MIB: u64 = 1;
const MIB: usize = 1 << 20;
/// Bytes per write(2).
const CHUNK: usize = 256 << 10;

/// A runtime under comparison.
#[derive(Clone, Copy)]
struct Runtime {
    label: &'static str,
    /// The CRI runtime handler ("" is containerd's default, runc).
    handler: &'static str,
}

const RUNC: Runtime = Runtime {
    label: "runc",
    handler: "",
};
const VMRUN: Runtime = Runtime {
    label: "vmrun",
    handler: VMRUN_HANDLER,
};

/// What one runtime measured.
struct Figures {
    /// Per throughput run.
    throughput_mib_s: Vec<f64>,
    /// Per request, connect to the end of the reply.
    latencies: Vec<Duration>,
    /// vmrun only.
    vmm_cpu: Option<VmmCpu>,
    /// The host's 1-minute load average when the measurements started.
    load_at_start: Option<f64>,
}

/// The VMM's host CPU time over the measured throughput runs.
struct VmmCpu {
    described: String,
    cpu: Duration,
    mib: u64,
}

/// The VMM process (and its supervisor under the jail) of the fixture's
/// one vmrun pod.
struct Vmm {
    pids: Vec<i32>,
    described: String,
}

/// utime + stime of `pids` together, in clock ticks.
fn cpu_ticks(pids: &[i32]) -> anyhow::Result<u64> {
    pids.iter().map(|&pid| Ok(proc_stat(pid)?.ticks)).sum()
}

struct ProcStat {
    ppid: i32,
    /// utime + stime: the process's threads, the exited ones included.
    ticks: u64,
}

fn proc_stat(pid: i32) -> anyhow::Result<ProcStat> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    parse_stat(&text).with_context(|| format!("{path}: {text:?}"))
}

fn parse_stat(text: &str) -> anyhow::Result<ProcStat> {
    // The command name (field 2) may hold spaces and parentheses: count
    // fields from after its closing one, where field 3 starts.
    let rest = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("no field {n}"))
    };
    Ok(ProcStat {
        ppid: i32::try_from(field(4)?).context("ppid")?,
        ticks: field(14)? + field(15)?,
    })
}

fn clock_ticks_per_second() -> anyhow::Result<u64> {
    // SAFETY: sysconf(3) only reads a system configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks)
        .ok()
        .filter(|&t| t > 0)
        .context("sysconf(_SC_CLK_TCK)")
}

/// The `vmrun-vmm` processes of the fixture. Under the jail the first
/// forks into a new pid namespace and supervises the VMM, its child; both
/// are summed (the supervisor only waits), so the figure holds whichever
/// one the VM runs in. There must be one VM: the vmrun pod's.
fn find_vmm(ctrd: &Containerd) -> anyhow::Result<Vmm> {
    let all = ctrd.processes();
    let boots: Vec<i32> = all
        .iter()
        .filter(|(_, cmdline)| cmdline.contains("vmrun-vmm --config"))
        .map(|(pid, _)| *pid)
        .collect();
    if boots.is_empty() {
        bail!("no `vmrun-vmm` process among the fixture's: {all:?}");
    }
    let mut outer = Vec::new();
    let mut inner = Vec::new();
    for &pid in &boots {
        if boots.contains(&proc_stat(pid)?.ppid) {
            inner.push(pid);
        } else {
            outer.push(pid);
        }
    }
    let [supervisor] = outer.as_slice() else {
        bail!(
            "expected one VMM (the vmrun pod's), found `vmrun-vmm` processes {boots:?} in {all:?}"
        );
    };
    let described = match inner.as_slice() {
        [] => format!("pid {supervisor}"),
        [vmm] => format!("pid {vmm} (and its supervisor {supervisor})"),
        more => format!("pids {more:?} (and their supervisor {supervisor})"),
    };
    Ok(Vmm {
        pids: boots,
        described,
    })
}

/// Connects to `addr`, retrying while nothing listens there yet: the pod's
/// server is starting, or the sink's loop is between two listeners. The
/// pause grows, so that a guest still starting its server is not kept busy
/// refusing connections, while a listener that is back at once is found at
/// once.
fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(stream) => return Ok(stream),
            Err(e) if started.elapsed() > READY_DEADLINE => {
                return Err(e).with_context(|| format!("connect to {addr}"))
            }
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// One transfer of `mib` MiB to the sink: the wall time from the first
/// byte written to the pod's close, and the VMM's CPU ticks over it.
struct Transfer {
    took: Duration,
    vmm_ticks: Option<u64>,
}

/// Sends `mib` MiB to the sink at `addr` from the fixture's namespace.
fn send(
    ctrd: &Containerd,
    addr: SocketAddr,
    mib: u64,
    vmm: Option<Vec<i32>>,
) -> anyhow::Result<Transfer> {
    ctrd.netns().run(move || -> anyhow::Result<Transfer> {
        let mut stream = connect(addr)?;
        stream.set_write_timeout(Some(STALL))?;
        stream.set_read_timeout(Some(STALL))?;
        let chunk = vec![0x5a_u8; CHUNK];
        let chunks = mib * (MIB / CHUNK) as u64;
        let before = vmm.as_deref().map(cpu_ticks).transpose()?;
        let started = Instant::now();
        for _ in 0..chunks {
            stream
                .write_all(&chunk)
                .with_context(|| format!("send to {addr}"))?;
        }
        stream.shutdown(Shutdown::Write)?;
        // nc exits, closing the connection, only once it has read our FIN,
        // so the EOF says the pod has taken every byte.
        let mut reply = [0_u8; 64];
        loop {
            match stream.read(&mut reply) {
                Ok(0) => break,
                Ok(n) => bail!("the sink at {addr} sent {n} bytes back"),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("wait for {addr} to close"));
                }
            }
        }
        let took = started.elapsed();
        let after = vmm.as_deref().map(cpu_ticks).transpose()?;
        Ok(Transfer {
            took,
            vmm_ticks: before.zip(after).map(|(b, a)| a.saturating_sub(b)),
        })
    })
}

/// One `GET /` on a new connection: connect to the end of the reply.
fn get(addr: SocketAddr) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, STALL)?;
    stream.set_read_timeout(Some(STALL))?;
    stream.set_write_timeout(Some(STALL))?;
    // HTTP/1.0: the server closes after the reply, which ends the read.
    stream.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let took = started.elapsed();
    if !(reply.starts_with(b"HTTP/1.") && reply.get(9..12) == Some(b"200")) {
        bail!(
            "GET http://{addr}/: {:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(200)])
        );
    }
    Ok(took)
}

/// `requests` sequential GETs from the fixture's namespace, after one that
/// waits for the server and is not counted.
fn latencies(
    ctrd: &Containerd,
    addr: SocketAddr,
    requests: usize,
) -> anyhow::Result<Vec<Duration>> {
    ctrd.netns().run(move || -> anyhow::Result<Vec<Duration>> {
        let started = Instant::now();
        while let Err(e) = get(addr) {
            if started.elapsed() > READY_DEADLINE {
                return Err(e.context(format!("httpd at {addr} did not answer")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (0..requests)
            .map(|n| get(addr).with_context(|| format!("request {n}")))
            .collect()
    })
}

/// Starts a pod of `runtime` with the sink and the web server; its ID is
/// pushed onto `pods` as soon as it exists, so that it is removed whatever
/// fails afterwards. Returns its CNI address.
async fn start_pod(
    cri: &mut CriClient,
    ctrd: &Containerd,
    runtime: Runtime,
    pods: &mut Vec<String>,
) -> anyhow::Result<Ipv4Addr> {
    let label = runtime.label;
    let config = CriClient::pod_config(&format!("bench-net-{label}"), &ctrd.dir().join("pod-logs"));
    let id = cri
        .run_pod_sandbox(&config, runtime.handler)
        .await
        .with_context(|| format!("RunPodSandbox ({label})\n{}", ctrd.log_tail(60)))?;
    pods.push(id.clone());
    let cni = CniAttachment::try_read(ctrd, &id).with_context(|| format!("the {label} pod"))?;
    for (name, script) in [("sink", sink_script()), ("web", web_script())] {
        let container = CriClient::container_config(name, IMAGE, &["sh", "-c", &script]);
        let container = cri
            .create_container(&id, container, &config)
            .await
            .with_context(|| format!("CreateContainer {name} ({label})\n{}", ctrd.log_tail(60)))?;
        cri.start_container(&container)
            .await
            .with_context(|| format!("StartContainer {name} ({label})\n{}", ctrd.log_tail(60)))?;
    }
    Ok(cni.ip)
}

/// Stops and removes a pod; a failure is reported, not returned: the
/// fixture's drop kills and removes whatever is left.
async fn remove_pod(cri: &mut CriClient, id: &str) {
    if let Err(e) = cri.stop_pod_sandbox(id).await {
        eprintln!("  StopPodSandbox {id}: {e}");
    }
    if let Err(e) = cri.remove_pod_sandbox(id).await {
        eprintln!("  RemovePodSandbox {id}: {e}");
    }
}

/// Everything measured against the pod of `runtime` at `ip`.
fn measure(
    ctrd: &Containerd,
    runtime: Runtime,
    ip: Ipv4Addr,
    args: &NetBenchArgs,
) -> anyhow::Result<Figures> {
    let label = runtime.label;
    let load_at_start = load_average();
    let vmm = if runtime.handler == VMRUN_HANDLER {
        Some(find_vmm(ctrd)?)
    } else {
        None
    };
    let sink = SocketAddr::from((ip, SINK_PORT));
    send(ctrd, sink, WARMUP_MIB, None).with_context(|| format!("warm-up ({label})"))?;
    let mut throughput_mib_s = Vec::new();
    let mut ticks = 0;
    for n in 0..args.runs {
        let transfer = send(ctrd, sink, args.mib, vmm.as_ref().map(|v| v.pids.clone()))
            .with_context(|| format!("throughput run {n} ({label})"))?;
        let rate = args.mib as f64 / transfer.took.as_secs_f64();
        eprintln!(
            "  {label} run {n}: {} MiB in {:.3} s, {rate:.1} MiB/s",
            args.mib,
            transfer.took.as_secs_f64()
        );
        throughput_mib_s.push(rate);
        ticks += transfer.vmm_ticks.unwrap_or(0);
    }
    let vmm_cpu = match vmm {
        Some(vmm) => Some(VmmCpu {
            described: vmm.described,
            cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second()? as f64),
            mib: args.mib * args.runs as u64,
        }),
        None => None,
    };
    let latencies = latencies(ctrd, SocketAddr::from((ip, WEB_PORT)), args.requests)
        .with_context(|| format!("GET / ({label})"))?;
    eprintln!(
        "  {label}: {} requests, median {:.3} ms",
        latencies.len(),
        ms(median(&latencies))
    );
    Ok(Figures {
        throughput_mib_s,
        latencies,
        vmm_cpu,
        load_at_start,
    })
}

/// Starts the pod of `runtime`, measures it and removes it again, also when
/// starting or measuring failed.
fn bench_runtime(
    tokio: &tokio::runtime::Runtime,
    cri: &mut CriClient,
    ctrd: &Containerd,
    runtime: Runtime,
    args: &NetBenchArgs,
) -> anyhow::Result<Figures> {
    eprintln!("{}: starting the pod", runtime.label);
    let mut pods = Vec::new();
    let figures = tokio
        .block_on(start_pod(cri, ctrd, runtime, &mut pods))
        .and_then(|ip| measure(ctrd, runtime, ip, args));
    for id in &pods {
        tokio.block_on(remove_pod(cri, id));
    }
    figures
}

fn median<T: Copy + PartialOrd>(samples: &[T]) -> T {
    percentile(samples, 50)
}

/// Nearest-rank percentile of non-empty `samples`.
fn percentile<T: Copy + PartialOrd>(samples: &[T], pct: usize) -> T {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// Three significant digits: the ratios here range from hundredths (a
/// throughput) to hundreds (a latency).
fn ratio(r: f64) -> String {
    if !r.is_finite() || r <= 0.0 {
        return format!("{r}");
    }
    let digits = (2 - r.log10().floor() as i32).clamp(0, 6) as usize;
    format!("{r:.digits$}")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print(args: &NetBenchArgs, runc: &Figures, vmrun: &Figures) {
    println!("pod network through containerd's CRI plugin, the fixture's namespace -> a pod:");
    println!("  runc: the pod's veth; vmrun: veth -> tc mirred -> tap -> virtio-net -> guest eth0");
    println!(
        "throughput: {} MiB into `nc -l` in the pod, until the pod closed the connection \
         (median of {} runs)",
        args.mib, args.runs
    );
    println!(
        "latency: {} sequential `GET /` to busybox httpd in the pod, each on a new TCP \
         connection (each includes the TCP handshake)",
        args.requests
    );
    println!();
    println!(
        "  {:<24} {:>10} {:>10} {:>11}",
        "", RUNC.label, VMRUN.label, "vmrun/runc"
    );
    let row = |what: &str, runc: f64, vmrun: f64, digits: usize| {
        println!(
            "  {what:<24} {runc:>10.digits$} {vmrun:>10.digits$} {:>10}x",
            ratio(vmrun / runc)
        );
    };
    row(
        "throughput (MiB/s)",
        median(&runc.throughput_mib_s),
        median(&vmrun.throughput_mib_s),
        1,
    );
    row(
        "GET / median (ms)",
        ms(median(&runc.latencies)),
        ms(median(&vmrun.latencies)),
        3,
    );
    row(
        "GET / p90 (ms)",
        ms(percentile(&runc.latencies, 90)),
        ms(percentile(&vmrun.latencies, 90)),
        3,
    );
    if let Some(cpu) = &vmrun.vmm_cpu {
        println!(
            "  {:<24} {:>10} {:>10.2}",
            "VMM CPU per MiB (ms)",
            "-",
            ms(cpu.cpu) / cpu.mib as f64
        );
        println!();
        println!(
            "VMM CPU: utime+stime of VMM {}, all threads (vCPUs and virtio-net), over the \
             throughput runs: {:.2} s for {} MiB",
            cpu.described,
            cpu.cpu.as_secs_f64(),
            cpu.mib
        );
    }
    let load = |f: &Figures| {
        f.load_at_start
            .map_or_else(|| "?".to_string(), |l| format!("{l:.2}"))
    };
    println!(
        "host load average (1 min) when each started: runc {}, vmrun {}",
        load(runc),
        load(vmrun)
    );
}

pub fn run(args: &NetBenchArgs) -> anyhow::Result<()> {
    if args.mib == 0 || args.runs == 0 || args.requests == 0 {
        bail!("--mib, --runs and --requests must be at least 1");
    }
    // Fail before containerd is set up, not at the first vmrun pod.
    if shim_binary().is_none() {
        bail!("{SHIM_BINARY} is not built (cargo build -p {SHIM_BINARY}) and not on PATH");
    }
    let ctrd = Containerd::start();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("a tokio runtime")?;
    let mut cri = tokio
        .block_on(CriClient::connect(ctrd.socket()))
        .context("connect to the CRI plugin")?;
    let runc = bench_runtime(&tokio, &mut cri, &ctrd, RUNC, args)?;
    let vmrun = bench_runtime(&tokio, &mut cri, &ctrd, VMRUN, args)?;
    print(args, &runc, &vmrun);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<u32> = (1..=10).rev().collect();
        assert_eq!(median(&samples), 5);
        assert_eq!(percentile(&samples, 90), 9);
        assert_eq!(percentile(&samples, 100), 10);
        assert_eq!(median(&[7.5]), 7.5);
        assert_eq!(percentile(&[3, 1, 2], 50), 2);
    }

    #[test]
    fn ratios_keep_three_significant_digits() {
        assert_eq!(ratio(0.008_314), "0.00831");
        assert_eq!(ratio(1.5), "1.50");
        assert_eq!(ratio(146.13), "146");
        assert_eq!(ratio(f64::INFINITY), "inf");
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = parse_stat(
            "42 (vmrun) boot (x)) S 41 42 42 0 -1 4194560 100 0 0 0 \
             250 75 0 0 20 0 4 0 1000 1000000 200",
        )
        .unwrap();
        assert_eq!(stat.ppid, 41);
        assert_eq!(stat.ticks, 325);
        assert!(parse_stat("42 (short) S 41").is_err());
    }

    #[test]
    fn this_process_stat_names_its_parent() {
        let me = i32::try_from(std::process::id()).unwrap();
        let parent = i32::try_from(std::os::unix::process::parent_id()).unwrap();
        assert_eq!(proc_stat(me).unwrap().ppid, parent);
        assert!(clock_ticks_per_second().unwrap() > 0);
    }
}
