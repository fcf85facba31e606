//! Names for the numeric codes stored in CRIU images: task states, mapping
//! kinds, open flags and socket fields. The numbers are Linux's (x86_64) and
//! CRIU 4.2.1's.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Name of a `task_state` value from `TaskCoreEntry`.
pub fn task_state(state: u32) -> String {
    match state {
        1 => "alive".into(),
        2 => "dead".into(),
        3 => "stopped".into(),
        6 => "zombie".into(),
        other => format!("unknown({other})"),
    }
}

// CRIU's VMA_* status bits (criu/include/image.h).
const VMA_AREA_STACK: u32 = 1 << 1;
const VMA_AREA_VSYSCALL: u32 = 1 << 2;
const VMA_AREA_VDSO: u32 = 1 << 3;
const VMA_AREA_HEAP: u32 = 1 << 5;
const VMA_FILE_PRIVATE: u32 = 1 << 6;
const VMA_FILE_SHARED: u32 = 1 << 7;
const VMA_ANON_SHARED: u32 = 1 << 8;
const VMA_ANON_PRIVATE: u32 = 1 << 9;
const VMA_AREA_SYSVIPC: u32 = 1 << 10;
const VMA_AREA_SOCKET: u32 = 1 << 11;
const VMA_AREA_VVAR: u32 = 1 << 12;
const VMA_AREA_AIORING: u32 = 1 << 13;
const VMA_AREA_MEMFD: u32 = 1 << 14;

/// Returns whether a mapping with this VMA status maps a file, so that its `shmid` is a file id.
pub fn vma_maps_file(status: u32) -> bool {
    status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED | VMA_AREA_MEMFD) != 0
}

/// Returns whether a mapping with this VMA status maps a memfd, so that its `shmid` is a file id.
pub fn vma_is_memfd(status: u32) -> bool {
    status & VMA_AREA_MEMFD != 0
}

/// Returns whether a mapping is `MAP_SHARED|MAP_ANONYMOUS` memory that CRIU recorded as such.
pub fn vma_is_anon_shared(status: u32) -> bool {
    status & VMA_ANON_SHARED != 0 && status & VMA_AREA_SYSVIPC == 0
}

/// Kind of a mapping from its VMA status bits, checked from the most to the least specific.
pub fn mapping_kind(status: u32) -> &'static str {
    let kinds = [
        (VMA_AREA_VDSO, "vdso"),
        (VMA_AREA_VVAR, "vvar"),
        (VMA_AREA_VSYSCALL, "vsyscall"),
        (VMA_AREA_STACK, "stack"),
        (VMA_AREA_HEAP, "heap"),
        (VMA_AREA_SYSVIPC, "sysv-shm"),
        (VMA_AREA_SOCKET, "socket"),
        (VMA_AREA_AIORING, "aio-ring"),
        (VMA_AREA_MEMFD, "memfd"),
        (VMA_FILE_PRIVATE, "file"),
        (VMA_FILE_SHARED, "file-shared"),
        (VMA_ANON_SHARED, "anon-shared"),
        (VMA_ANON_PRIVATE, "anon"),
    ];
    kinds
        .iter()
        .find(|(bit, _)| status & bit != 0)
        .map_or("other", |(_, name)| name)
}

/// `/proc/PID/maps`-style permissions, such as `r-xp`.
pub fn protection(prot: u32, map_flags: u32) -> String {
    const PROT_READ: u32 = 1;
    const PROT_WRITE: u32 = 2;
    const PROT_EXEC: u32 = 4;
    const MAP_SHARED: u32 = 1;
    let bit = |mask: u32, c: char| if prot & mask != 0 { c } else { '-' };
    let share = if map_flags & MAP_SHARED != 0 {
        's'
    } else {
        'p'
    };
    [
        bit(PROT_READ, 'r'),
        bit(PROT_WRITE, 'w'),
        bit(PROT_EXEC, 'x'),
        share,
    ]
    .iter()
    .collect()
}

/// Names of the open(2) flags that matter to a reader: access mode, `O_APPEND`, `O_NONBLOCK`...
pub fn open_flags(flags: u32) -> Vec<&'static str> {
    let mut names = vec![match flags & 0o3 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        _ => "O_RDWR",
    }];
    let bits = [
        (0o2000, "O_APPEND"),
        (0o4000, "O_NONBLOCK"),
        (0o200000, "O_DIRECTORY"),
        (0o4010000, "O_SYNC"),
        (0o40000, "O_DIRECT"),
        (0o20000000, "O_PATH"),
    ];
    for (bit, name) in bits {
        if flags & bit == bit {
            names.push(name);
        }
    }
    names
}

pub fn socket_family(family: u32) -> &'static str {
    match family {
        1 => "unix",
        2 => "inet",
        10 => "inet6",
        _ => "other",
    }
}

pub fn socket_type(kind: u32) -> &'static str {
    match kind {
        1 => "stream",
        2 => "dgram",
        3 => "raw",
        5 => "seqpacket",
        _ => "other",
    }
}

pub fn ip_protocol(proto: u32) -> &'static str {
    match proto {
        0 => "",
        6 => "tcp",
        17 => "udp",
        58 => "icmpv6",
        1 => "icmp",
        _ => "other",
    }
}

/// Name of a socket state: the kernel keeps TCP state numbers for unix and UDP sockets too.
pub fn socket_state(state: u32) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// Formats an address stored as 32-bit words in network byte order.
///
/// CRIU copies the kernel's `in_addr`/`in6_addr` words as host integers, so on the
/// little-endian hosts ckpt targets each word's little-endian bytes are the address bytes.
pub fn ip_address(family: u32, words: &[u32]) -> Option<String> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    match (family, bytes.len()) {
        (2, 4) => {
            let octets: [u8; 4] = bytes.try_into().ok()?;
            Some(Ipv4Addr::from(octets).to_string())
        }
        (10, 16) => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(format!("[{}]", Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// Name of a unix socket: a path, `@name` for an abstract socket, or empty when unbound.
pub fn unix_name(name: &[u8], name_dir: Option<&str>) -> String {
    match name.split_first() {
        None => String::new(),
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        Some(_) => {
            let name = String::from_utf8_lossy(name);
            match name_dir {
                Some(dir) if !name.starts_with('/') => format!("{dir}/{name}"),
                _ => name.into_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_address_decodes() {
        let word = u32::from_le_bytes([127, 0, 0, 1]);
        assert_eq!(ip_address(2, &[word]).as_deref(), Some("127.0.0.1"));
        assert_eq!(
            ip_address(10, &[0, 0, 0, u32::from_le_bytes([0, 0, 0, 1])]).as_deref(),
            Some("[::1]")
        );
        assert_eq!(ip_address(2, &[1, 2]), None);
    }

    #[test]
    fn heap_wins_over_anon() {
        assert_eq!(mapping_kind(VMA_AREA_HEAP | VMA_ANON_PRIVATE | 1), "heap");
        assert_eq!(mapping_kind(VMA_ANON_PRIVATE | 1), "anon");
        assert_eq!(mapping_kind(1), "other");
    }

    #[test]
    fn flags_name_access_mode() {
        assert_eq!(open_flags(0o2001), vec!["O_WRONLY", "O_APPEND"]);
        assert_eq!(open_flags(0o100000), vec!["O_RDONLY"]);
        assert_eq!(protection(5, 2), "r-xp");
    }

    #[test]
    fn abstract_unix_name_gets_at_sign() {
        assert_eq!(unix_name(b"\0bus", None), "@bus");
        assert_eq!(unix_name(b"sock", Some("/run")), "/run/sock");
        assert_eq!(unix_name(b"", None), "");
    }
}
