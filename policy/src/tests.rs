use proptest::prelude::*;

use crate::{EXAMPLE_POLICY, ErrorKind, parse, ranges};

const BASE: &str = r#"version = 1
[[zone]]
name = "cc"
networks = ["10.0.1.0/24"]
[[zone]]
name = "inv"
networks = ["10.0.2.0/24"]
[[asset]]
name = "pcs"
zone = "inv"
address = "10.0.2.11"
unit_ids = [1, 2]
[[conduit]]
name = "ems"
from = "cc"
sources = ["10.0.1.10"]
to = "pcs"
"#;

fn errors(rules: &str) -> Vec<(usize, usize, ErrorKind)> {
    match parse(&format!("{BASE}{rules}"), "t.toml") {
        Ok(_) => Vec::new(),
        Err(e) => {
            e.0.into_iter()
                .map(|e| (e.line, e.column, e.kind))
                .collect()
        }
    }
}

/// Line of the first rule line appended to BASE.
const L: usize = 18;

#[test]
fn example_policy_is_valid_and_compiles() {
    let p = parse(EXAMPLE_POLICY, "examples/bess-site.toml").expect("valid");
    let c = p.compile();
    assert_eq!(c.conduits_meta.len(), 4);
    assert_eq!(c.conduits.len(), 4);
    assert_eq!(c.settings.ports[0], 502);
    assert_eq!(c.assets.len(), 2);
    let ems = &p.conduits[0];
    let fc6 = ems.rules.iter().find(|r| r.function == 6).unwrap();
    assert_eq!(fc6.ranges, vec![(40, 40), (50, 50)]);
}

#[test]
fn a_valid_rule_set() {
    let r = "[[conduit.rule]]\nfunction = 3\naddresses = [\"0-9\", \"10-19\", 100]\n\
             [[conduit.rule]]\nfunction = \"read_write_multiple_registers\"\nread = [\"0-9\"]\nwrite = [\"5\"]\n\
             [[conduit.rule]]\nfunction = \"diagnostics\"\nsubfunctions = [0]\n\
             [[conduit.rule]]\nfunction = \"report_server_id\"\n";
    assert_eq!(errors(r), vec![]);
    let p = parse(&format!("{BASE}{r}"), "t").unwrap();
    assert_eq!(
        p.conduits[0].rules[0].ranges,
        vec![(0, 19), (100, 100)],
        "adjacent ranges joined"
    );
    let c = p.compile();
    assert_eq!(c.rules.len(), 5, "FC23 has a read and a write entry");
}

/// Rules appended to BASE, the expected line and column, a check of the kind.
type Case = (&'static str, usize, usize, fn(&ErrorKind) -> bool);

#[test]
fn each_error_names_its_line_and_column() {
    let cases: Vec<Case> = vec![
        (
            "[[conduit.rule]]\nfunction = \"read_holding_register\"\naddresses = [\"0\"]\n",
            L + 1,
            12,
            |k| matches!(k, ErrorKind::UnknownFunctionName { suggestion: Some(s), .. } if s == "read_holding_registers"),
        ),
        ("[[conduit.rule]]\nfunction = 200\n", L + 1, 12, |k| {
            matches!(k, ErrorKind::BadFunctionCode(200))
        }),
        (
            "[[conduit.rule]]\nfunction = 3\naddresses = [\"10-5\"]\n",
            L + 2,
            14,
            |k| matches!(k, ErrorKind::InvertedRange { .. }),
        ),
        (
            "[[conduit.rule]]\nfunction = 3\naddresses = [\"0-10\", \"5-20\"]\n",
            L + 2,
            22,
            |k| matches!(k, ErrorKind::OverlappingRanges { .. }),
        ),
        (
            "[[conduit.rule]]\nfunction = 3\naddresses = [70000]\n",
            L + 2,
            14,
            |k| matches!(k, ErrorKind::OutOfRange { .. }),
        ),
        (
            "[[conduit.rule]]\nfunction = 3\naddresses = [\"4x0101\"]\n",
            L + 2,
            14,
            |k| matches!(k, ErrorKind::DataModelNotation { hint, .. } if hint.contains("protocol address is 100")),
        ),
        (
            "[[conduit.rule]]\nfunction = 3\naddresses = [400001]\n",
            L + 2,
            14,
            |k| matches!(k, ErrorKind::DataModelNotation { .. }),
        ),
        (
            "[[conduit.rule]]\nfunction = 3\naddresses = [\"0\"]\nquantity = 5\n",
            L + 3,
            1,
            |k| matches!(k, ErrorKind::Syntax(m) if m.contains("quantity")),
        ),
        ("[[conduit.rule]]\nfunction = 3\n", L + 1, 12, |k| {
            matches!(k, ErrorKind::RuleShape { .. })
        }),
        (
            "[[conduit.rule]]\nfunction = 17\naddresses = [\"0\"]\n",
            L + 1,
            12,
            |k| matches!(k, ErrorKind::RuleShape { .. }),
        ),
        (
            "[[conduit.rule]]\nfunction = 3\naddresses = [\"0\"]\n[[conduit.rule]]\nfunction = 3\naddresses = [\"1\"]\n",
            L + 4,
            12,
            |k| matches!(k, ErrorKind::DuplicateFunction { function: 3, .. }),
        ),
    ];
    for (rules, line, column, check) in cases {
        let errs = errors(rules);
        assert_eq!(errs.len(), 1, "one error for {rules:?}: {errs:?}");
        let (l, c, k) = &errs[0];
        assert!(check(k), "kind for {rules:?}: {k:?}");
        assert_eq!((*l, *c), (line, column), "position for {rules:?}: {k}");
    }
}

#[test]
fn references_and_addresses_are_checked() {
    let bad = BASE
        .replace("to = \"pcs\"", "to = \"pcs-9\"")
        .replace(
            "sources = [\"10.0.1.10\"]",
            "sources = [\"10.0.3.10\", \"10.0.0.0/23\"]",
        )
        .replace("address = \"10.0.2.11\"", "address = \"10.0.9.11\"")
        + "[[conduit.rule]]\nfunction = 3\naddresses = [\"0\"]\n";
    let errs = parse(&bad, "t.toml").unwrap_err();
    let text = errs.to_string();
    assert_eq!(errs.0.len(), 4, "{text}");
    assert!(
        text.contains("t.toml:11:11: error: asset address 10.0.9.11 is not inside zone \"inv\""),
        "{text}"
    );
    assert!(
        text.contains("t.toml:16:12: error: source 10.0.3.10/32 is not inside zone \"cc\""),
        "{text}"
    );
    assert!(
        text.contains("t.toml:16:25: error: source 10.0.0.0/23 is not inside zone"),
        "{text}"
    );
    assert!(
        text.contains("t.toml:17:6: error: unknown asset \"pcs-9\""),
        "{text}"
    );
}

#[test]
fn duplicates_units_and_words() {
    let dup = format!("{BASE}[[conduit.rule]]\nfunction = 3\naddresses = [\"0\"]\n{BASE_CONDUIT}");
    let e = parse(&dup, "t").unwrap_err();
    assert!(
        e.0.iter().any(|e| matches!(
            e.kind,
            ErrorKind::DuplicateName {
                what: "conduit",
                ..
            }
        )),
        "{e}"
    );
    assert!(
        e.0.iter()
            .any(|e| matches!(e.kind, ErrorKind::AmbiguousConduit { .. })),
        "{e}"
    );

    let units = BASE.replace(
        "to = \"pcs\"",
        "to = \"pcs\"\nunit_ids = [7]\nmode = \"learn\"\nsources2 = 1",
    );
    let e = parse(
        &format!("{units}[[conduit.rule]]\nfunction = 3\naddresses = [\"0\"]\n"),
        "t",
    )
    .unwrap_err();
    assert!(
        matches!(&e.0[0].kind, ErrorKind::Syntax(m) if m.contains("sources2")),
        "unknown key: {e}"
    );
    let units = BASE.replace(
        "to = \"pcs\"",
        "to = \"pcs\"\nunit_ids = [7]\nmode = \"learn\"",
    );
    let e = parse(
        &format!("{units}[[conduit.rule]]\nfunction = 3\naddresses = [\"0\"]\n"),
        "t",
    )
    .unwrap_err();
    assert!(
        e.0.iter()
            .any(|e| matches!(e.kind, ErrorKind::UnitNotOnAsset { unit: 7, .. })),
        "{e}"
    );
    assert!(
        e.0.iter()
            .any(|e| matches!(e.kind, ErrorKind::BadWord { what: "mode", .. })),
        "{e}"
    );
    assert_eq!(e.0.len(), 2, "both reported: {e}");

    let hostbits = BASE.replace(
        "networks = [\"10.0.1.0/24\"]",
        "networks = [\"10.0.1.5/24\"]",
    );
    let e = parse(
        &format!("{hostbits}[[conduit.rule]]\nfunction = 3\naddresses = [\"0\"]\n"),
        "t",
    )
    .unwrap_err();
    assert!(e.to_string().contains("did you mean 10.0.1.0/24"), "{e}");
    let e = parse("version = 2\n", "t").unwrap_err();
    assert_eq!(
        e.to_string(),
        "t:1:11: error: unsupported policy version 2: this gateway reads version 1"
    );
}

const BASE_CONDUIT: &str = "[[conduit]]\nname = \"ems\"\nfrom = \"cc\"\nsources = [\"10.0.1.10\"]\nto = \"pcs\"\n[[conduit.rule]]\nfunction = 4\naddresses = [\"0\"]\n";

proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC{0,300}") {
        let _ = parse(&s, "fuzz");
    }

    #[test]
    fn merged_ranges_cover_exactly_the_union(list in proptest::collection::vec((0u32..2000, 0u32..50), 1..20)) {
        let ranges: Vec<(u32, u32)> = list.iter().map(|(s, l)| (*s, s + l)).collect();
        let merged = ranges::merge(ranges.clone());
        for w in merged.windows(2) {
            prop_assert!(w[0].1 + 1 < w[1].0, "merged ranges are disjoint and not adjacent");
        }
        for x in 0..2100u32 {
            let a = ranges.iter().any(|(s, e)| *s <= x && x <= *e);
            let b = merged.iter().any(|(s, e)| *s <= x && x <= *e);
            prop_assert_eq!(a, b);
        }
    }
}
