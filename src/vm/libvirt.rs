//! The libvirt driver: one connection (reopened when it dies) through the `virt` crate.
//!
//! Protection settings live in the domain metadata as
//! `<protect level="protect" order="1" anti-affinity="db"/>` in the namespace [`METADATA_NS`]
//! (key `diskbeat`), so they are part of the persistent XML a survivor defines.

use super::{
    protection_serde, Capacity, DriverError, Inventory, ProtectionSettings, StartRequest, VmDriver, VmInfo,
    VmRunState,
};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

/// XML namespace of the protection element in the domain metadata.
pub const METADATA_NS: &str = "https://diskbeat.dev/xmlns/protection/1";
/// Namespace prefix libvirt writes the element with.
pub const METADATA_KEY: &str = "diskbeat";

pub struct LibvirtDriver {
    uri: String,
    conn: Option<Connect>,
}

impl std::fmt::Debug for LibvirtDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtDriver").field("uri", &self.uri).finish()
    }
}

fn connect(uri: &str) -> Result<Connect, DriverError> {
    // libvirt's default handler prints every error on stderr; ours are returned instead.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(virt::error::clear_error_callback);
    Connect::open(Some(uri)).map_err(|e| {
        DriverError::Unreachable(format!("{uri}: {}; is libvirtd running and is the URI right?", e.message()))
    })
}

fn code(e: &virt::error::Error) -> u32 {
    e.code().to_raw()
}

impl LibvirtDriver {
    /// Connects to `uri` (e.g. `qemu:///system`).
    pub fn open(uri: &str) -> Result<LibvirtDriver, DriverError> {
        Ok(LibvirtDriver { uri: uri.to_string(), conn: Some(connect(uri)?) })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The connection, reopened if the daemon went away since the last call.
    fn conn(&mut self) -> Result<&Connect, DriverError> {
        let alive = self.conn.as_ref().is_some_and(|c| c.is_alive().unwrap_or(false));
        if !alive {
            // `virt` panics in Drop when closing fails, and a panic aborts the daemon (which
            // fences): leak a dead connection instead (once per libvirtd restart).
            if let Some(dead) = self.conn.take() {
                std::mem::forget(dead);
            }
            self.conn = Some(connect(&self.uri)?);
        }
        Ok(self.conn.as_ref().expect("set above"))
    }

    /// Maps a libvirt error: a dead connection is `Unreachable` (and reopened next call).
    fn error(&self, op: &'static str, vm: &str, e: virt::error::Error) -> DriverError {
        let alive = self.conn.as_ref().is_some_and(|c| c.is_alive().unwrap_or(false));
        if !alive {
            return DriverError::Unreachable(format!("{}: {} (during {op})", self.uri, e.message()));
        }
        if code(&e) == sys::VIR_ERR_NO_DOMAIN {
            DriverError::NoSuchVm(vm.to_string())
        } else {
            DriverError::Failed { op, vm: vm.to_string(), message: e.message().to_string() }
        }
    }

    fn by_name(&mut self, op: &'static str, name: &str) -> Result<Domain, DriverError> {
        let r = self.conn()?.lookup_domain_by_name(name);
        r.map_err(|e| self.error(op, name, e))
    }

    /// One domain's entry; `Ok(None)` when it vanished while we looked at it.
    fn vm_info(&self, d: &Domain) -> Result<Option<VmInfo>, DriverError> {
        let gone = |e: &virt::error::Error| code(e) == sys::VIR_ERR_NO_DOMAIN;
        macro_rules! get {
            ($call:expr, $name:expr) => {
                match $call {
                    Ok(v) => v,
                    Err(e) if gone(&e) => return Ok(None),
                    Err(e) => return Err(self.error("inventory", $name, e)),
                }
            };
        }
        let name = get!(d.name(), "?");
        let uuid_text = get!(d.uuid_string(), &name);
        let uuid = uuid::Uuid::parse_str(&uuid_text)
            .map_err(|e| DriverError::Protocol(format!("VM '{name}': UUID '{uuid_text}': {e}")))?;
        let info = get!(d.info(), &name);
        let active = get!(d.is_active(), &name);
        let persistent = get!(d.is_persistent(), &name);
        // The persistent copy is what a survivor restarts; a transient domain only has its live one.
        let scope = if persistent { sys::VIR_DOMAIN_AFFECT_CONFIG } else { sys::VIR_DOMAIN_AFFECT_LIVE };
        let protection =
            match d.metadata(sys::VIR_DOMAIN_METADATA_ELEMENT as i32, Some(METADATA_NS), scope) {
                Ok(xml) => parse_protect(&xml).map_err(|why| {
                    DriverError::Protocol(format!(
                        "VM '{name}': diskbeat metadata {xml:?}: {why}; fix it with `diskbeat vm protect {name} --level ...`"
                    ))
                })?,
                Err(e) if code(&e) == sys::VIR_ERR_NO_DOMAIN_METADATA => ProtectionSettings::default(),
                Err(e) => get!(Err(e), &name),
            };
        // SECURE: the definition must restart the VM elsewhere as it is, passwords included.
        let xml_flags =
            if persistent { sys::VIR_DOMAIN_XML_INACTIVE } else { 0 } | sys::VIR_DOMAIN_XML_SECURE;
        let definition = get!(d.xml_desc(xml_flags), &name);
        Ok(Some(VmInfo {
            name,
            uuid,
            // The configured maximum, not the balloon's current size: what a restart must fit.
            memory_mib: info.max_mem / 1024,
            vcpus: info.nr_virt_cpu,
            // Any active state (paused, shutting down, ...) may still write the VM's disks.
            state: if active { VmRunState::Running } else { VmRunState::Stopped },
            protection,
            definition: definition.into_bytes(),
        }))
    }
}

impl VmDriver for LibvirtDriver {
    fn kind(&self) -> &'static str {
        "libvirt"
    }

    fn inventory(&mut self) -> Result<Inventory, DriverError> {
        let conn = self.conn()?;
        let node = conn.node_info();
        let domains = conn.list_all_domains(0);
        let node = node.map_err(|e| self.error("inventory", "", e))?;
        let domains = domains.map_err(|e| self.error("inventory", "", e))?;
        let capacity = Capacity { memory_mib: node.memory / 1024, vcpus: node.cpus };
        let mut vms = Vec::with_capacity(domains.len());
        for d in &domains {
            if let Some(vm) = self.vm_info(d)? {
                vms.push(vm);
            }
        }
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        let inv = Inventory { capacity, vms };
        inv.check().map_err(|why| DriverError::Protocol(format!("{}: {why}", self.uri)))?;
        Ok(inv)
    }

    fn start(&mut self, vm: &StartRequest<'_>) -> Result<(), DriverError> {
        let xml = std::str::from_utf8(vm.definition)
            .map_err(|e| DriverError::Protocol(format!("VM '{}': definition is not UTF-8: {e}", vm.name)))?;
        check_uuid(xml, vm.uuid).map_err(|why| DriverError::Failed {
            op: "start",
            vm: vm.name.to_string(),
            message: format!("{why}; refusing to define it"),
        })?;
        let defined = self.conn()?.define_domain_xml(xml);
        let d = defined.map_err(|e| self.error("start", vm.name, e))?;
        // Never autostart: a fenced host that reboots must not start VMs already restarted
        // elsewhere. Only diskbeat starts them, after proving the old copy dead. Redefining keeps
        // an old autostart flag, hence the explicit reset.
        if let Err(e) = d.set_autostart(false) {
            return Err(self.error("start", vm.name, e));
        }
        let active = d.is_active().map_err(|e| self.error("start", vm.name, e))?;
        if !active {
            d.create().map_err(|e| self.error("start", vm.name, e))?;
        }
        match d.is_active() {
            Ok(true) => Ok(()),
            Ok(false) => Err(DriverError::Failed {
                op: "start",
                vm: vm.name.to_string(),
                message: "libvirt accepted the start but the domain is not active".into(),
            }),
            Err(e) => Err(self.error("start", vm.name, e)),
        }
    }

    fn destroy(&mut self, name: &str) -> Result<(), DriverError> {
        let d = match self.by_name("destroy", name) {
            Ok(d) => d,
            // Not defined here: not running here either.
            Err(DriverError::NoSuchVm(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        match d.is_active() {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => return Err(self.error("destroy", name, e)),
        }
        if let Err(e) = d.destroy() {
            // It may have stopped on its own between the check and the call.
            if d.is_active().ok() != Some(false) {
                return Err(self.error("destroy", name, e));
            }
        }
        Ok(())
    }

    fn lookup(&mut self, uuid: uuid::Uuid) -> Result<Option<VmRunState>, DriverError> {
        let text = uuid.to_string();
        // VIR_ERR_NO_DOMAIN on a live connection (`error` maps it to `NoSuchVm`, a dead
        // connection to `Unreachable`) is libvirt's explicit "no domain with this UUID here".
        let absent = |e: DriverError| match e {
            DriverError::NoSuchVm(_) => Ok(None),
            other => Err(other),
        };
        let found = self.conn()?.lookup_domain_by_uuid_string(&text);
        let d = match found {
            Ok(d) => d,
            Err(e) => return absent(self.error("lookup", &text, e)),
        };
        // Any active state (paused, shutting down, ...) counts as running, as in `inventory`;
        // a domain that vanished since the lookup (a transient one that stopped) is absent.
        match d.is_active() {
            Ok(true) => Ok(Some(VmRunState::Running)),
            Ok(false) => Ok(Some(VmRunState::Stopped)),
            Err(e) => absent(self.error("lookup", &text, e)),
        }
    }

    fn set_protection(&mut self, name: &str, settings: &ProtectionSettings) -> Result<(), DriverError> {
        let d = self.by_name("protect", name)?;
        let active = d.is_active().map_err(|e| self.error("protect", name, e))?;
        let persistent = d.is_persistent().map_err(|e| self.error("protect", name, e))?;
        let mut flags = 0;
        if persistent {
            flags |= sys::VIR_DOMAIN_AFFECT_CONFIG;
        }
        // The live copy too, or the running domain's XML would disagree until its next start.
        if active {
            flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
        }
        let xml = format_protect(settings);
        d.set_metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(&xml),
            Some(METADATA_KEY),
            Some(METADATA_NS),
            flags,
        )
        .map_err(|e| self.error("protect", name, e))
    }
}

/// Every un-prefixed `<uuid>` element of the definition must equal `want` (and there must be one).
fn check_uuid(xml: &str, want: uuid::Uuid) -> Result<(), String> {
    let mut found = 0;
    let mut rest = xml;
    while let Some(i) = rest.find("<uuid>") {
        rest = &rest[i + "<uuid>".len()..];
        let end = rest.find("</uuid>").ok_or("definition has an unterminated <uuid>")?;
        let text = rest[..end].trim();
        match uuid::Uuid::parse_str(text) {
            Ok(u) if u == want => found += 1,
            Ok(u) => return Err(format!("definition has UUID {u}, but the request is for {want}")),
            Err(e) => return Err(format!("definition has an invalid UUID '{text}': {e}")),
        }
        rest = &rest[end..];
    }
    if found == 0 {
        return Err("definition has no <uuid>: a VM is restarted by UUID".into());
    }
    Ok(())
}

/// `<protect level=".." order=".." anti-affinity=".."/>` with attribute values escaped.
pub fn format_protect(s: &ProtectionSettings) -> String {
    let mut out = format!("<protect level=\"{}\"", s.level.as_str());
    if let Some(order) = s.order {
        out.push_str(&format!(" order=\"{order}\""));
    }
    if let Some(group) = &s.anti_affinity {
        out.push_str(&format!(" anti-affinity=\"{}\"", escape_attr(group)));
    }
    out.push_str("/>");
    out
}

fn escape_attr(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn unescape_attr(v: &str) -> Result<String, String> {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(';').ok_or_else(|| format!("unterminated entity in '{v}'"))?;
        let entity = &rest[1..end];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32).ok_or_else(|| format!("unknown entity '&{entity};'"))?
            }
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses the element libvirt returns for our namespace (any prefix; unknown attributes such as
/// `xmlns` are ignored so later versions can add some).
pub fn parse_protect(xml: &str) -> Result<ProtectionSettings, String> {
    let t = xml.trim();
    let body = t.strip_prefix('<').ok_or("not an XML element")?;
    let name_end = body.find(|c: char| c.is_whitespace() || c == '/' || c == '>').unwrap_or(body.len());
    let tag = &body[..name_end];
    if tag.rsplit(':').next() != Some("protect") {
        return Err(format!("expected a <protect> element, found <{tag}>"));
    }
    let mut rest = &body[name_end..];
    let mut attrs: Vec<(&str, String)> = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.starts_with("/>") || rest.starts_with('>') {
            break;
        }
        if rest.is_empty() {
            return Err("unterminated element".into());
        }
        let eq = rest.find('=').ok_or("attribute without a value")?;
        let key = rest[..eq].trim();
        if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == '<' || c == '>') {
            return Err(format!("bad attribute name '{key}'"));
        }
        let after = rest[eq + 1..].trim_start();
        let quote =
            after.chars().next().filter(|c| *c == '"' || *c == '\'').ok_or("unquoted attribute value")?;
        let close = after[1..].find(quote).ok_or("unterminated attribute value")?;
        attrs.push((key, unescape_attr(&after[1..1 + close])?));
        rest = &after[close + 2..];
    }
    let get = |k: &str| attrs.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
    let level_text = get("level").ok_or("no level attribute")?;
    let level = protection_serde::parse(level_text)
        .ok_or_else(|| format!("unknown level '{level_text}' (protect, best-effort or none)"))?;
    let order = match get("order") {
        None => None,
        Some(o) => Some(o.trim().parse::<i64>().map_err(|_| format!("order '{o}' is not an integer"))?),
    };
    let anti_affinity = get("anti-affinity").filter(|g| !g.is_empty()).map(str::to_string);
    Ok(ProtectionSettings { level, order, anti_affinity })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::Protection;

    #[test]
    fn protect_element_round_trips() {
        let s = ProtectionSettings {
            level: Protection::BestEffort,
            order: Some(-3),
            anti_affinity: Some("a\"b<&>'c".into()),
        };
        assert_eq!(parse_protect(&format_protect(&s)).unwrap(), s);
        let none = ProtectionSettings::default();
        assert_eq!(parse_protect(&format_protect(&none)).unwrap(), none);
    }

    #[test]
    fn protect_element_as_libvirt_returns_it() {
        let xml = "<diskbeat:protect xmlns:diskbeat=\"https://diskbeat.dev/xmlns/protection/1\" \
                   level='protect' order=\"1\" anti-affinity=\"db\"/>\n";
        let s = parse_protect(xml).unwrap();
        assert_eq!(s.level, Protection::Protect);
        assert_eq!(s.order, Some(1));
        assert_eq!(s.anti_affinity.as_deref(), Some("db"));
    }

    #[test]
    fn garbage_protect_elements_are_errors() {
        for bad in [
            "",
            "garbage",
            "<other level=\"protect\"/>",
            "<protect/>",
            "<protect level=\"always\"/>",
            "<protect level=\"protect\" order=\"first\"/>",
            "<protect level=\"protect",
            "<protect level=protect/>",
            "<protect level=\"a&bogus;\"/>",
            "<protect level=\"&#xFFFFFFFF;\"/>",
            "<\u{e9}",
        ] {
            assert!(parse_protect(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn uuid_check() {
        let u = uuid::Uuid::from_u128(7);
        let xml = format!("<domain><name>a</name><uuid>{u}</uuid></domain>");
        assert!(check_uuid(&xml, u).is_ok());
        assert!(check_uuid(&xml, uuid::Uuid::from_u128(8)).is_err());
        assert!(check_uuid("<domain><name>a</name></domain>", u).is_err());
        assert!(check_uuid("<domain><uuid>nope</uuid></domain>", u).is_err());
    }
}
