//! containerd shim v2 for vmrun (`io.containerd.vmrun.v2`).
//!
//! Not built yet: the shim arrives with its own issue, on top of the agent
//! channel and the container engine.
