//! The cheap sections at tiny sizes: the output must be well-formed Markdown tables with
//! numbers in them. No timing is asserted (the machine is shared).

use kcl_bench::report::{self, parse_tables, Section};
use kcl_bench::services::Services;
use kcl_bench::{failover, lease_cost, pipeline, Scale};

fn check(section: &Section, expected_rows: usize) -> Vec<Vec<Vec<String>>> {
    let md = section.to_markdown();
    let tables = parse_tables(&md).unwrap_or_else(|e| panic!("{e}\n{md}"));
    assert!(!tables.is_empty(), "no table in\n{md}");
    assert_eq!(tables[0].len() - 2, expected_rows, "rows of\n{md}");
    assert!(
        md.contains(&format!("<!-- section {} -->", section.number))
            && md.contains(&format!("<!-- /section {} -->", section.number)),
        "markers missing in\n{md}"
    );
    tables
}

fn number(cell: &str) -> f64 {
    let digits: String = cell
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ' '))
        .next()
        .unwrap_or("")
        .replace(' ', "");
    digits
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {cell:?}"))
}

#[test]
fn pipeline_section_is_a_well_formed_table() {
    let s = pipeline::section(Scale::Tiny);
    let tables = check(&s, 2);
    for row in &tables[0][2..] {
        assert!(number(&row[3]) > 0.0, "CPU ns / record in {row:?}");
        assert!(number(&row[4]) > 0.0, "records / CPU s in {row:?}");
        assert_eq!(number(&row[2]), 2000.0, "every record delivered: {row:?}");
    }
}

#[test]
fn metrics_cost_section_is_a_well_formed_table() {
    let s = kcl_bench::metrics_cost::section(Scale::Tiny);
    let tables = check(&s, 2);
    for row in &tables[0][2..] {
        assert!(number(&row[2]) > 0.0, "CPU without a recorder in {row:?}");
        assert!(number(&row[3]) > 0.0, "CPU with Prometheus in {row:?}");
    }
}

#[test]
fn lease_cost_and_failover_sections_are_well_formed() {
    let s = lease_cost::section(Scale::Tiny);
    let tables = check(&s, 4);
    let ours = &tables[0][2];
    assert_eq!(ours[1], "this library (measured)");
    assert!(number(&ours[4]) > 0.0, "scans counted: {ours:?}");

    let f = failover::section(Scale::Tiny, &mut Services::new());
    let tables = check(&f, 4);
    for row in &tables[0][2..] {
        let p99 = number(&row[6]);
        assert!(p99 > 0.0 && p99 < 10.0, "p99 in multiples of F: {row:?}");
    }

    // Both assemble into one document with a summary-ready goal line each.
    let doc = report::document("# t", &[s, f], None, "");
    assert_eq!(parse_tables(&doc).unwrap().len(), 2);
    assert!(report::find_section(&doc, 3).is_some() && report::find_section(&doc, 4).is_some());
}

#[test]
fn deaggregation_section_is_a_well_formed_table() {
    let s = kcl_bench::deaggregation::section(Scale::Tiny);
    let tables = check(&s, 4);
    for row in &tables[0][2..] {
        assert_eq!(
            number(&row[3]),
            2000.0,
            "every user record produced: {row:?}"
        );
        assert!(number(&row[4]) > 0.0, "CPU ns / user record in {row:?}");
    }
}
