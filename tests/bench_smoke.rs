//! Smoke test of the benchmark suite: runs `bench/run.py --smoke` (one short round of hello
//! world and a 10 MiB upload against this module in embedded and daemon mode and against
//! Debian's C mod_wsgi in embedded mode) with the module of this build, and checks that it
//! exits 0 and writes a JSON report with a non-zero request rate for every target.
//!
//! Skipped, with a printed reason, when `wrk` or the C mod_wsgi
//! (`/usr/lib/apache2/modules/mod_wsgi.so`) is missing: `./scripts/deps.sh --bench` installs
//! both.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Debian's C mod_wsgi, which the smoke run measures side by side.
const C_MODULE: &str = "/usr/lib/apache2/modules/mod_wsgi.so";
/// The targets a smoke run measures.
const SMOKE_TARGETS: &[&str] = &["rs-embedded", "rs-daemon", "c-embedded"];

#[test]
fn bench_smoke_run_measures_every_target() {
    if let Some(reason) = missing_tool() {
        println!("skipping the benchmark smoke test: {reason}");
        return;
    }
    let module = support::module_path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().expect("cannot create a temporary folder");
    let started = Instant::now();
    let run = Command::new("/usr/bin/python3.11")
        .arg(repo.join("bench/run.py"))
        .arg("--smoke")
        .arg("--out")
        .arg(out.path())
        .arg("--module")
        .arg(&module)
        .output()
        .expect("cannot run bench/run.py");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "bench/run.py --smoke failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    println!("the smoke run took {:.1?}", started.elapsed());

    let path = out.path().join("smoke-latest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}\n{stdout}", path.display()));
    let report = Json::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let scenarios = report
        .get("scenarios")
        .and_then(Json::as_array)
        .expect("the report has no scenarios");
    assert!(!scenarios.is_empty(), "the report has no scenarios");
    for scenario in scenarios {
        let name = scenario.get("name").and_then(Json::as_str).unwrap_or("?");
        let targets = scenario
            .get("targets")
            .and_then(Json::as_object)
            .unwrap_or_else(|| panic!("scenario {name} has no targets"));
        for target in SMOKE_TARGETS {
            let rate = targets
                .get(*target)
                .and_then(|t| t.get("median"))
                .and_then(|m| m.get("req_per_s"))
                .and_then(Json::as_f64)
                .unwrap_or(0.0);
            assert!(
                rate > 0.0,
                "scenario {name}, target {target}: no requests per second\n{stdout}"
            );
        }
    }
}

/// Why the smoke test cannot run here, if it cannot.
fn missing_tool() -> Option<String> {
    if !Path::new(C_MODULE).is_file() {
        return Some(format!("{C_MODULE} is missing (./scripts/deps.sh --bench)"));
    }
    let wrk = Command::new("wrk").arg("-v").output();
    if wrk.is_err() {
        return Some("wrk is not installed (./scripts/deps.sh --bench)".to_owned());
    }
    None
}

/// A JSON value: just enough of a parser to read the benchmark's report.
#[derive(Debug)]
enum Json {
    /// `true`, `false` or `null`, which the test never looks at.
    Literal,
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(BTreeMap<String, Json>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut parser = Parser {
            bytes: text.as_bytes(),
            pos: 0,
        };
        let value = parser.value()?;
        parser.skip_space();
        if parser.pos != parser.bytes.len() {
            return Err(format!("trailing characters at byte {}", parser.pos));
        }
        Ok(value)
    }

    fn get(&self, key: &str) -> Option<&Json> {
        self.as_object().and_then(|map| map.get(key))
    }

    fn as_object(&self) -> Option<&BTreeMap<String, Json>> {
        match self {
            Json::Object(map) => Some(map),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&Vec<Json>> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(text) => Some(text),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(number) => Some(*number),
            _ => None,
        }
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self
            .bytes
            .get(self.pos)
            .is_some_and(u8::is_ascii_whitespace)
        {
            self.pos += 1;
        }
    }

    fn error<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.pos))
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        self.skip_space();
        if self.bytes.get(self.pos) == Some(&byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.error(&format!("expected {:?}", byte as char))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.skip_space();
        match self.bytes.get(self.pos) {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Json::String),
            Some(b't') => self.literal("true", Json::Literal),
            Some(b'f') => self.literal("false", Json::Literal),
            Some(b'n') => self.literal("null", Json::Literal),
            Some(b'N') => self.literal("NaN", Json::Number(f64::NAN)),
            Some(_) => self.number(),
            None => self.error("unexpected end"),
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            self.error("unknown literal")
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.pos;
        while self
            .bytes
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
        {
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.pos]).unwrap_or("");
        match text.parse() {
            Ok(number) => Ok(Json::Number(number)),
            Err(_) => self.error("bad number"),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return self.error("unterminated string");
            };
            self.pos += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let Some(&escaped) = self.bytes.get(self.pos) else {
                        return self.error("unterminated escape");
                    };
                    self.pos += 1;
                    match escaped {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            // The report's strings need no exact decoding: keep a placeholder.
                            self.pos += 4;
                            out.push(b'?');
                        }
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn array(&mut self) -> Result<Json, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_space();
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_space();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                _ => return self.error("expected ',' or ']'"),
            }
        }
    }

    fn object(&mut self) -> Result<Json, String> {
        self.expect(b'{')?;
        let mut map = BTreeMap::new();
        self.skip_space();
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(Json::Object(map));
        }
        loop {
            self.skip_space();
            let key = self.string()?;
            self.expect(b':')?;
            map.insert(key, self.value()?);
            self.skip_space();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Object(map));
                }
                _ => return self.error("expected ',' or '}'"),
            }
        }
    }
}
