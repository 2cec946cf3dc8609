//! Placeholder (the exec driver lands from the drivers branch).
use super::*;
pub struct ExecDriver;
impl ExecDriver {
    pub fn new(_hook: &std::path::Path) -> Result<ExecDriver, DriverError> {
        Err(DriverError::Unreachable("exec driver not built yet".into()))
    }
}
impl VmDriver for ExecDriver {
    fn kind(&self) -> &'static str { "exec" }
    fn inventory(&mut self) -> Result<Inventory, DriverError> { unimplemented!() }
    fn start(&mut self, _vm: &StartRequest<'_>) -> Result<(), DriverError> { unimplemented!() }
    fn destroy(&mut self, _name: &str) -> Result<(), DriverError> { unimplemented!() }
    fn set_protection(&mut self, _name: &str, _s: &ProtectionSettings) -> Result<(), DriverError> { unimplemented!() }
}
