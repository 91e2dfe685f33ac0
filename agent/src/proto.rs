//! The agent API types and service stubs, generated from
//! `proto/vmrun/agent/v1/agent.proto` by `build.rs`.

tonic::include_proto!("vmrun.agent.v1");
