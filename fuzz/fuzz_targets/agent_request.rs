//! The agent API's request decoding and checking: arbitrary bytes decoded
//! as one of the agent proto's request messages (the first byte picks
//! which), then passed through what the server does with it before anything
//! happens in the guest (`vmrun_agent::fuzz_hooks`: exec request to
//! `ExecSpec`, container spec and process rewriting, resources, mounts), the
//! error turned into the status the host would see. A decoded message must
//! also survive an encode/decode round trip unchanged.
//!
//! A few selectors skip the protobuf layer and hand the bytes straight to
//! the JSON parsers (`spec_json`, `process_json`, `resources_json`) inside
//! an otherwise valid request, so that the fuzzer spends its time there.
//! Selectors from 224 up are structure-aware: the rest of the input builds
//! one of the checked messages field by field (`arbitrary`), which is
//! encoded and then goes the same way as raw bytes. Byte-level mutations
//! rarely keep protobuf's length prefixes consistent, so without this the
//! checks behind a decoded message are reached with few distinct values.
//! Nothing here needs root or starts a process.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use vmrun_agent::fuzz_hooks as hooks;
use vmrun_agent::proto::*;

/// Decodes `bytes` as `M`; a message that decodes must encode back to
/// something that decodes to the same message.
fn decode<M: Message + Default + PartialEq>(bytes: &[u8]) -> Option<M> {
    let msg = M::decode(bytes).ok()?;
    let again = M::decode(msg.encode_to_vec().as_slice()).expect("re-encoded message decodes");
    assert!(again == msg, "encode/decode round trip changed the message");
    Some(msg)
}

/// What the host would get back: the status code and message are built
/// (and so formatted) like the server's.
fn answer(result: Result<(), tonic::Status>) {
    if let Err(status) = result {
        let _ = (status.code(), status.message().len());
    }
}

fn run(selector: u8, bytes: &[u8]) {
    match selector % 28 {
        0 => drop(decode::<CheckRequest>(bytes)),
        1 => drop(decode::<VersionRequest>(bytes)),
        2 => {
            if let Some(m) = decode::<ExecProcessRequest>(bytes) {
                answer(hooks::exec_process(m));
            }
        }
        3 => drop(decode::<WaitProcessRequest>(bytes)),
        4 => drop(decode::<SignalProcessRequest>(bytes)),
        5 => {
            if let Some(m) = decode::<ResizePtyRequest>(bytes) {
                answer(hooks::resize_pty(m));
            }
        }
        6 => drop(decode::<CloseStdinRequest>(bytes)),
        7 => drop(decode::<WriteStdinRequest>(bytes)),
        8 => drop(decode::<ReadOutputRequest>(bytes)),
        9 => drop(decode::<GuestDetailsRequest>(bytes)),
        10 => drop(decode::<InitSandboxRequest>(bytes)),
        11 => drop(decode::<ShutdownRequest>(bytes)),
        12 => {
            if let Some(m) = decode::<MountStorageRequest>(bytes) {
                answer(hooks::mount_storage(m));
            }
        }
        13 => {
            if let Some(m) = decode::<UnmountStorageRequest>(bytes) {
                answer(hooks::unmount_storage(m));
            }
        }
        14 => {
            if let Some(m) = decode::<CreateContainerRequest>(bytes) {
                answer(hooks::create_container(m));
            }
        }
        15 => drop(decode::<StartContainerRequest>(bytes)),
        16 => {
            if let Some(m) = decode::<ExecInContainerRequest>(bytes) {
                answer(hooks::exec_in_container(m));
            }
        }
        17 => drop(decode::<KillContainerRequest>(bytes)),
        18 => drop(decode::<RemoveContainerRequest>(bytes)),
        19 => drop(decode::<ContainerStateRequest>(bytes)),
        20 => drop(decode::<ContainerStatsRequest>(bytes)),
        21 => drop(decode::<PauseContainerRequest>(bytes)),
        22 => drop(decode::<ResumeContainerRequest>(bytes)),
        23 => {
            if let Some(m) = decode::<UpdateContainerRequest>(bytes) {
                answer(hooks::update_container(m));
            }
        }
        // The JSON parsers directly, inside otherwise valid requests.
        24 | 25 => answer(hooks::create_container(CreateContainerRequest {
            container_id: "fuzz".into(),
            spec_json: bytes.to_vec().into(),
            rootfs: if selector % 28 == 24 {
                "/run/vmrun/rootfs".into()
            } else {
                String::new()
            },
            writable_overlay: selector % 2 == 0,
            terminal: selector >= 128,
            pty_size: None,
        })),
        26 => answer(hooks::exec_in_container(ExecInContainerRequest {
            container_id: "fuzz".into(),
            process_json: bytes.to_vec().into(),
            terminal: selector >= 128,
            pty_size: None,
        })),
        _ => answer(hooks::update_container(UpdateContainerRequest {
            container_id: "fuzz".into(),
            resources_json: bytes.to_vec().into(),
        })),
    }
}

#[derive(Arbitrary, Debug)]
struct ArbUser {
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
}

#[derive(Arbitrary, Debug)]
struct ArbPty {
    rows: u32,
    cols: u32,
}

/// The checked requests, field by field.
#[derive(Arbitrary, Debug)]
enum Structured {
    Exec {
        argv: Vec<String>,
        env: Vec<String>,
        cwd: String,
        user: Option<ArbUser>,
        terminal: bool,
        pty_size: Option<ArbPty>,
    },
    ResizePty {
        exec_id: String,
        size: Option<ArbPty>,
    },
    Create {
        container_id: String,
        spec_json: Vec<u8>,
        rootfs: String,
        writable_overlay: bool,
        terminal: bool,
        pty_size: Option<ArbPty>,
    },
    ExecIn {
        container_id: String,
        process_json: Vec<u8>,
        terminal: bool,
        pty_size: Option<ArbPty>,
    },
    Update {
        container_id: String,
        resources_json: Vec<u8>,
    },
    Mount {
        source: String,
        fstype: String,
        mount_point: String,
        options: Vec<String>,
        read_only: bool,
    },
    Unmount {
        mount_point: String,
    },
}

fn pty(p: Option<ArbPty>) -> Option<PtySize> {
    p.map(|p| PtySize {
        rows: p.rows,
        cols: p.cols,
    })
}

/// Encodes the structured request and runs it through the raw path.
fn run_structured(s: Structured) {
    let (selector, bytes) = match s {
        Structured::Exec {
            argv,
            env,
            cwd,
            user,
            terminal,
            pty_size,
        } => (
            2,
            ExecProcessRequest {
                argv,
                env,
                cwd,
                user: user.map(|u| User {
                    uid: u.uid,
                    gid: u.gid,
                    additional_gids: u.additional_gids,
                }),
                terminal,
                pty_size: pty(pty_size),
            }
            .encode_to_vec(),
        ),
        Structured::ResizePty { exec_id, size } => (
            5,
            ResizePtyRequest {
                exec_id,
                size: pty(size),
            }
            .encode_to_vec(),
        ),
        Structured::Create {
            container_id,
            spec_json,
            rootfs,
            writable_overlay,
            terminal,
            pty_size,
        } => (
            14,
            CreateContainerRequest {
                container_id,
                spec_json: spec_json.into(),
                rootfs,
                writable_overlay,
                terminal,
                pty_size: pty(pty_size),
            }
            .encode_to_vec(),
        ),
        Structured::ExecIn {
            container_id,
            process_json,
            terminal,
            pty_size,
        } => (
            16,
            ExecInContainerRequest {
                container_id,
                process_json: process_json.into(),
                terminal,
                pty_size: pty(pty_size),
            }
            .encode_to_vec(),
        ),
        Structured::Update {
            container_id,
            resources_json,
        } => (
            23,
            UpdateContainerRequest {
                container_id,
                resources_json: resources_json.into(),
            }
            .encode_to_vec(),
        ),
        Structured::Mount {
            source,
            fstype,
            mount_point,
            options,
            read_only,
        } => (
            12,
            MountStorageRequest {
                source,
                fstype,
                mount_point,
                options,
                read_only,
            }
            .encode_to_vec(),
        ),
        Structured::Unmount { mount_point } => {
            (13, UnmountStorageRequest { mount_point }.encode_to_vec())
        }
    };
    run(selector, &bytes);
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((&selector, bytes)) if selector >= 224 => {
            if let Ok(s) = Structured::arbitrary_take_rest(Unstructured::new(bytes)) {
                run_structured(s);
            }
        }
        Some((&selector, bytes)) => run(selector, bytes),
        None => {}
    }
});
