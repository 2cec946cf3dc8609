//! Placeholder (the libvirt driver lands from the drivers branch).
use super::*;
pub struct LibvirtDriver;
impl LibvirtDriver {
    pub fn open(_uri: &str) -> Result<LibvirtDriver, DriverError> {
        Err(DriverError::Unreachable("libvirt driver not built yet".into()))
    }
}
impl VmDriver for LibvirtDriver {
    fn kind(&self) -> &'static str { "libvirt" }
    fn inventory(&mut self) -> Result<Inventory, DriverError> { unimplemented!() }
    fn start(&mut self, _vm: &StartRequest<'_>) -> Result<(), DriverError> { unimplemented!() }
    fn destroy(&mut self, _name: &str) -> Result<(), DriverError> { unimplemented!() }
    fn set_protection(&mut self, _name: &str, _s: &ProtectionSettings) -> Result<(), DriverError> { unimplemented!() }
}
