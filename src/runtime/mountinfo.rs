//! Parsing of `/proc/PID/mountinfo`.

/// One line of a mountinfo file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    pub id: u32,

    /// Path inside the mount's file system that is mounted (field 4).
    pub root: String,
    /// Mount point, relative to the reading process's root (field 5).
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
}

/// Parses mountinfo text, skipping lines that do not have the documented shape.
pub fn parse(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountInfo> {
    let (head, tail) = line.split_once(" - ")?;
    let head: Vec<&str> = head.split(' ').collect();
    let mut tail = tail.split(' ');
    if head.len() < 6 {
        return None;
    }
    Some(MountInfo {
        id: head[0].parse().ok()?,
        root: unescape(head[3]),
        mount_point: unescape(head[4]),
        fs_type: tail.next()?.to_string(),
        source: unescape(tail.next()?),
        super_options: tail.next().unwrap_or("").to_string(),
    })
}

/// Decodes the octal escapes (`\040` for a space) the kernel uses in mountinfo.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).ok();
            if let Some(value) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl MountInfo {
    /// Cgroup v1 controllers named in the super options, sorted (`name=systemd` included).
    pub fn cgroup_controllers(&self) -> Vec<String> {
        let mut controllers: Vec<String> = self
            .super_options
            .split(',')
            .filter(|o| !is_generic_cgroup_option(o))
            .map(str::to_string)
            .collect();
        controllers.sort();
        controllers
    }
}

/// Options of a cgroup v1 mount that do not name a controller.
fn is_generic_cgroup_option(option: &str) -> bool {
    matches!(
        option,
        "rw" | "ro" | "clone_children" | "noprefix" | "xattr"
    ) || option.starts_with("release_agent=")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
68 67 254:0 /tmp/bb/rootfs / rw,relatime - ext4 /dev/vda rw,discard
76 75 0:29 /t1 /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu
84 75 0:37 /t1 /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
53 69 0:42 /null /proc/timer\\040list rw - tmpfs tmpfs rw,size=65536k
bad line
";

    #[test]
    fn parses_fields_and_escapes() {
        let mounts = parse(SAMPLE);
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[0].mount_point, "/");
        assert_eq!(mounts[0].root, "/tmp/bb/rootfs");
        assert_eq!(mounts[1].fs_type, "cgroup");
        assert_eq!(mounts[1].cgroup_controllers(), vec!["cpu"]);
        assert_eq!(mounts[2].cgroup_controllers(), vec!["name=systemd"]);
        assert_eq!(mounts[3].mount_point, "/proc/timer list");
        assert_eq!(mounts[3].root, "/null");
    }
}
