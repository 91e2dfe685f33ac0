//! The VMM process's own heap, kept small: every sandbox runs one, so what
//! each keeps of its own is paid per sandbox (its guest memory, by
//! contrast, is mostly the snapshot's shared page cache).

/// One malloc arena for the whole process. glibc gives each new thread
/// that allocates an arena of its own (up to 8 per core), and the VMM has
/// a dozen threads (vCPUs, one worker per device slot) that allocate a
/// little each: each arena's first pages are memory of that sandbox alone.
/// Its threads allocate rarely enough that sharing one arena's lock costs
/// nothing measurable; measured, a restored VMM's own dirty pages went from
/// 1452 to 1276 KiB. (A `malloc_trim` after the restore freed nothing: the
/// heap left is live device state.) It also means no thread ever shrinks
/// a non-main heap, for which glibc opens /proc/sys/vm/overcommit_memory
/// (a call most threads' seccomp filters do not allow). Call it
/// before threads start.
pub fn use_one_arena() {
    // SAFETY: mallopt takes two integers and only changes malloc's tuning.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) } != 1 {
        tracing::debug!("mallopt(M_ARENA_MAX) refused: threads keep their own arenas");
    }
}
