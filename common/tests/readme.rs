//! The README is part of the interface: its configuration table must list
//! every variable, and its example queries must run against the real schema.

use birdsong_common::config::SETTINGS;
use birdsong_testkit::TestEnv;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md at the repository root")
}

#[test]
fn configuration_table_lists_every_variable_with_its_default() {
    let text = readme();
    for s in SETTINGS {
        let row = if s.default.is_empty() {
            format!("| `{}` | (empty) |", s.name)
        } else {
            format!("| `{}` | `{}` |", s.name, s.default)
        };
        assert!(text.contains(&row), "README lacks the row {row}");
    }
}

#[tokio::test]
async fn example_queries_run_against_the_schema() {
    let env = TestEnv::start().await.expect("test environment");
    let text = readme();
    let mut ran = 0;
    for block in text.split("```sql").skip(1) {
        let sql = block.split("```").next().unwrap_or("");
        for statement in sql.split(';') {
            let code: String = statement
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            if code.trim().is_empty() {
                continue;
            }
            let uses_param = code.contains("$1");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(code.clone()));
            if uses_param {
                q = q.bind(uuid::Uuid::new_v4());
            }
            q.fetch_all(&env.pool)
                .await
                .unwrap_or_else(|e| panic!("README query failed: {e}\n{code}"));
            ran += 1;
        }
    }
    assert!(
        ran >= 5,
        "expected the README's example queries, found {ran}"
    );
}
