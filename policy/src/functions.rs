//! Modbus function names accepted in policy files.

pub const NAMES: &[(&str, u8)] = &[
    ("read_coils", 1),
    ("read_discrete_inputs", 2),
    ("read_holding_registers", 3),
    ("read_input_registers", 4),
    ("write_single_coil", 5),
    ("write_single_register", 6),
    ("read_exception_status", 7),
    ("diagnostics", 8),
    ("get_comm_event_counter", 11),
    ("get_comm_event_log", 12),
    ("write_multiple_coils", 15),
    ("write_multiple_registers", 16),
    ("report_server_id", 17),
    ("read_file_record", 20),
    ("write_file_record", 21),
    ("mask_write_register", 22),
    ("read_write_multiple_registers", 23),
    ("read_fifo_queue", 24),
    ("encapsulated_interface_transport", 43),
    ("read_device_identification", 43),
];

pub fn code(name: &str) -> Option<u8> {
    NAMES.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

pub fn name(code: u8) -> &'static str {
    NAMES
        .iter()
        .find(|(_, c)| *c == code)
        .map_or("user-defined", |(n, _)| n)
}

/// The known name closest to `name` (edit distance), when close enough.
pub fn suggest(name: &str) -> Option<String> {
    let name = name.to_ascii_lowercase().replace([' ', '-'], "_");
    NAMES
        .iter()
        .map(|(n, _)| (edit_distance(&name, n), *n))
        .min()
        .filter(|(d, n)| *d <= n.len() / 3 + 1)
        .map(|(_, n)| n.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}
