//! Defects spendgate really had, put back into one run by a mutated fake
//! (a fault wrapper or the simulated entry point), so a test can show the
//! simulator catches each of them. Production code carries none of them.

/// One historical defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutant {
    /// The entry points (HTTP, Cycles, CLI) settled by looking the hold
    /// up first: a store that was down answered "unavailable" instead of
    /// keeping the settlement, and a store that had lost the hold "no
    /// such hold", and the cost was lost (fixed by settling by ids
    /// through the services).
    LookupFirst,
    /// The SQL store read the hold before it took the community's lock:
    /// two finalizes of one call both found it live and both were told
    /// they finalized it (fixed by locking before reading).
    ReadBeforeLock,
    /// A store that writes whatever limits it is given, whatever their
    /// version: a config sync pass that read the row before a budget
    /// change writes its stale snapshot over the change (fixed by
    /// versioned limits).
    StaleLimits,
    /// A budget change that rewrote the whole configuration row it had
    /// read a round trip before, undoing an AI switch made meanwhile
    /// (fixed by writing the limit columns alone).
    WholeRowBudgetChange,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 4] = [
        Mutant::LookupFirst,
        Mutant::ReadBeforeLock,
        Mutant::StaleLimits,
        Mutant::WholeRowBudgetChange,
    ];
}
