//! Failover planner: protection levels, host failures tolerated, restart plans (pure code).
