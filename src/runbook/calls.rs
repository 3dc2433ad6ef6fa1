//! The function calls of a compiled runbook, checked against what it can call.
//!
//! Rhai resolves a call only when it runs, so a misspelt or missing function would fail
//! in the middle of a remediation. This check walks every call in a runbook (plain calls
//! and method calls, in its functions and closures too) and looks each one up, by name
//! and number of arguments, among the runbook functions the sandbox registers, Rhai's
//! built-in packages, Rhai's keywords, and the functions the runbook defines. A call
//! through a namespace (`lib::f()`, after `import "lib" as lib`) is looked up among the
//! public functions of the imported file when it is a runbook file the catalog compiled
//! (the file's own calls are checked as a runbook of its own); an import the check cannot
//! follow is left to the run. A call whose name is a variable (a function pointer called
//! directly) is left alone.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use rhai::{ASTNode, Engine, Expr, FnAccess, FnCallExpr, Position, Stmt, AST};

/// Names Rhai handles itself, whatever the number of arguments.
const KEYWORDS: &[&str] = &[
    "print",
    "debug",
    "type_of",
    "eval",
    "Fn",
    "call",
    "curry",
    "is_shared",
    "is_def_var",
    "is_def_fn",
    "this",
    "global",
];

/// Every function an engine can call: name, and the numbers of arguments it takes.
#[derive(Debug, Clone, Default)]
pub struct KnownFunctions {
    arities: BTreeMap<String, BTreeSet<usize>>,
}

impl KnownFunctions {
    /// The functions registered on `engine` and those of its packages.
    pub fn of(engine: &Engine) -> KnownFunctions {
        let mut known = KnownFunctions::default();
        for signature in engine.gen_fn_signatures(true) {
            if let Some((name, arity)) = parse_signature(&signature) {
                known.add(name, arity);
            }
        }
        known
    }

    /// What a file offers to a runbook that imports it: its public functions.
    pub fn exported_by(ast: &AST) -> KnownFunctions {
        let mut known = KnownFunctions::default();
        for f in ast.iter_functions() {
            if f.access == FnAccess::Public {
                known.add(f.name, f.params.len());
            }
        }
        known
    }

    fn add(&mut self, name: &str, arity: usize) {
        self.arities
            .entry(name.to_owned())
            .or_default()
            .insert(arity);
    }

    fn takes(&self, name: &str, arity: usize) -> bool {
        self.arities
            .get(name)
            .is_some_and(|arities| arities.contains(&arity))
    }
}

/// One call, as written.
struct Call {
    name: String,
    args: usize,
    method: bool,
    position: Position,
    /// An operator: not for this check.
    operator: bool,
    /// The namespace of `lib::f()`, `lib`; several for `a::b::f()`.
    namespace: Vec<String>,
}

impl Call {
    fn of(call: &FnCallExpr, position: Position, method: bool) -> Call {
        Call {
            name: call.name.to_string(),
            args: call.args.len(),
            method,
            position,
            operator: call.is_operator_call(),
            namespace: call
                .namespace
                .path
                .iter()
                .map(|ident| ident.name.to_string())
                .collect(),
        }
    }
}

/// A call to a function that does not exist with that number of arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCall {
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

/// Every call in `ast` that `known`, the script's own functions and the modules it
/// imports cannot answer, in source order. `module` gives the functions of the file an
/// `import` names, when it is known.
pub fn unknown_calls<'m>(
    ast: &AST,
    known: &KnownFunctions,
    module: &dyn Fn(&str) -> Option<&'m KnownFunctions>,
) -> Vec<UnknownCall> {
    let mut own = known.clone();
    for f in ast.iter_functions() {
        own.add(f.name, f.params.len());
    }
    let mut variables: HashSet<String> = ["alert", "incident", "secrets"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut calls: Vec<Call> = Vec::new();
    // `import "lib" as alias`: alias -> "lib".
    let mut imports: BTreeMap<String, Option<String>> = BTreeMap::new();
    ast.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Stmt(Stmt::Import(import, _))) => {
                let target = match &import.0 {
                    Expr::StringConstant(s, _) => Some(s.to_string()),
                    _ => None,
                };
                // Two imports under one alias: the check cannot say which one a call sees.
                let seen = imports.contains_key(import.1.name.as_str());
                imports.insert(import.1.name.to_string(), target.filter(|_| !seen));
            }
            Some(ASTNode::Expr(Expr::FnCall(call, pos))) => calls.push(Call::of(call, *pos, false)),
            Some(ASTNode::Expr(Expr::MethodCall(call, pos))) => {
                calls.push(Call::of(call, *pos, true))
            }
            Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) => calls.push(Call::of(call, *pos, false)),
            Some(ASTNode::Expr(Expr::Variable(v, _, _))) => {
                variables.insert(v.1.to_string());
            }
            Some(ASTNode::Stmt(Stmt::Var(v, _, _))) => {
                variables.insert(v.0.name.to_string());
            }
            Some(ASTNode::Stmt(Stmt::For(f, _))) => {
                variables.insert(f.0.name.to_string());
                if let Some(counter) = &f.1 {
                    variables.insert(counter.name.to_string());
                }
            }
            _ => {}
        }
        true
    });
    for f in ast.iter_functions() {
        variables.extend(f.params.iter().map(|p| p.to_string()));
    }

    let mut unknown = Vec::new();
    for call in calls {
        let Call {
            name,
            args,
            method,
            position: pos,
            operator,
            namespace,
        } = call;
        let name = name.as_str();
        if operator || !is_identifier(name) {
            continue;
        }
        if !namespace.is_empty() {
            let exported = match namespace.as_slice() {
                [alias] => imports
                    .get(alias)
                    .cloned()
                    .flatten()
                    .and_then(|m| module(&m)),
                _ => None,
            };
            if let Some(exported) = exported.filter(|e| !e.takes(name, args)) {
                let module = &namespace[0];
                let message = match exported.arities.get(name) {
                    Some(arities) => format!(
                        "calls unknown function {module}::{name}/{args}: {name} takes {} argument(s)",
                        join_or(&arities.iter().map(usize::to_string).collect::<Vec<_>>())
                    ),
                    None => format!(
                        "calls unknown function {module}::{name}/{args}: the module {module} has no public function {name}"
                    ),
                };
                unknown.push(UnknownCall {
                    position: pos.line().map(|line| (line, pos.position().unwrap_or(1))),
                    message,
                });
            }
            continue;
        }
        let skip = KEYWORDS.contains(&name) || variables.contains(name);
        // `x.f(a)` is `f(x, a)`; a function the script defines may also take `x` as `this`.
        let found = skip
            || if method {
                own.takes(name, args + 1) || own.takes(name, args)
            } else {
                own.takes(name, args)
            };
        if found {
            continue;
        }
        let arity = if method { args + 1 } else { args };
        let message = match own.arities.get(name) {
            Some(arities) => {
                let counts: Vec<String> = arities.iter().map(usize::to_string).collect();
                format!(
                    "calls unknown function {name}/{arity}: {name} takes {} argument(s){}",
                    join_or(&counts),
                    if method {
                        " (a method call passes its object as the first)"
                    } else {
                        ""
                    }
                )
            }
            None => format!(
                "calls unknown function {name}/{arity}: not a runbook function, a Rhai built-in or a function of this runbook"
            ),
        };
        unknown.push(UnknownCall {
            position: pos.line().map(|line| (line, pos.position().unwrap_or(1))),
            message,
        });
    }
    unknown.sort_by_key(|u| u.position);
    unknown
}

/// The name and number of parameters of a signature such as
/// `exec(program: &str, args: Array) -> Map`.
fn parse_signature(signature: &str) -> Option<(&str, usize)> {
    let open = signature.find('(')?;
    let name = &signature[..open];
    let mut depth = 0usize;
    let mut params = 0usize;
    let mut any = false;
    for c in signature[open + 1..].chars() {
        match c {
            '(' | '<' | '[' => depth += 1,
            ')' if depth == 0 => break,
            ')' | '>' | ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => params += 1,
            c if !c.is_whitespace() => any = true,
            _ => {}
        }
    }
    Some((name, if any { params + 1 } else { 0 }))
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunbooksConfig;
    use crate::runbook::sandbox::Sandbox;

    /// The unknown calls of `source`, as `line:col: message`.
    fn check(source: &str) -> Vec<String> {
        let sandbox = Sandbox::new(&RunbooksConfig::default());
        let ast = sandbox.compile(source).expect("compiles");
        let known = KnownFunctions::of(sandbox.engine());
        unknown_calls(&ast, &known, &|_| None)
            .into_iter()
            .map(|u| {
                let (l, c) = u.position.unwrap_or((0, 0));
                format!("{l}:{c}: {}", u.message)
            })
            .collect()
    }

    #[test]
    fn signatures() {
        assert_eq!(
            parse_signature("exec(program: &str, args: Array) -> Map"),
            Some(("exec", 2))
        );
        assert_eq!(
            parse_signature("len(string: &str) -> i64"),
            Some(("len", 1))
        );
        assert_eq!(
            parse_signature("timestamp() -> Instant"),
            Some(("timestamp", 0))
        );
        assert_eq!(parse_signature("f(_, _, _)"), Some(("f", 3)));
        assert_eq!(
            parse_signature("g(m: HashMap<K, V>, x: i64)"),
            Some(("g", 2))
        );
    }

    #[test]
    fn a_call_to_a_function_that_does_not_exist_is_named_with_its_position() {
        assert_eq!(
            check("log(\"a\");\nlet x = restart_service(\"nginx\");\n"),
            ["2:9: calls unknown function restart_service/1: not a runbook function, a Rhai built-in or a function of this runbook"]
        );
        assert_eq!(
            check("exec(\"systemctl\", [\"restart\"], 5);"),
            ["1:1: calls unknown function exec/3: exec takes 1 or 2 argument(s)"]
        );
        assert_eq!(
            check("let s = \"a\";\nif s.lenght() > 0 { log(s); }\n"),
            ["2:6: calls unknown function lenght/1: not a runbook function, a Rhai built-in or a function of this runbook"]
        );
        assert_eq!(
            check("fn helper(a) { frobnicate(a) }\nhelper(1);\n"),
            ["1:16: calls unknown function frobnicate/1: not a runbook function, a Rhai built-in or a function of this runbook"]
        );
    }

    #[test]
    fn built_ins_runbook_functions_own_functions_and_closures_pass() {
        let source = r#"
            let name = alert.labels["name"];
            let r = exec("systemctl", ["restart", "--", name]);
            let out = http("GET", "http://h/x");
            log(`code ${r.code} ${out.status}`);
            sleep(1); sleep(0.5);
            let parts = "a,b".split(",");
            let n = parts.len() + "12".parse_int() + len("abc");
            let t = type_of(n); print(t); debug(t);
            if name.contains("x") && name.starts_with("y") { escalate("no"); }
            let s = n.to_string(); s.trim(); s.to_upper();
            let m = #{a: 1}; m.keys(); m.contains("a"); m.get("a");
            let f = |x| x + 1; f.call(2); let g = Fn("helper"); g.call(1); f(3);
            let c = f.curry(1);
            fn helper(a) { a * 2 }
            fn bump() { this += 1; }
            let k = 1; k.bump(); helper(2);
            for (x, i) in parts { log(x + i); }
            is_def_var("k"); is_def_fn("helper", 1);
            silence("1h", "c"); query("up");
            let arr = [3, 1, 2]; arr.sort(); arr.push(4); arr.filter(|v| v > 1).map(|v| v * 2);
            try { throw "x"; } catch (err) { log(`${err}`); }
            sub_string("abc", 1, 1); "abc".sub_string(1); "abc".index_of("b");
            timestamp().elapsed; parse_float("1.5"); to_json(m); m.to_json();
            let shadow = |q| q; shadow(1);
        "#;
        assert_eq!(check(source), Vec::<String>::new());
    }

    #[test]
    fn namespaced_calls_are_looked_up_in_the_imported_file() {
        let sandbox = Sandbox::new(&RunbooksConfig::default());
        let known = KnownFunctions::of(sandbox.engine());
        let lib = sandbox
            .compile("fn restart(unit) { exec(\"systemctl\", [\"restart\", unit]) }\nprivate fn hidden() { 1 }\n")
            .expect("compiles");
        let lib = KnownFunctions::exported_by(&lib);
        // Compiling does not resolve the import; the check finds the file.
        let ast = sandbox
            .compile("import \"lib\" as lib;\nlib::restart(\"a\");\nlib::restart();\nlib::hidden();\nimport \"elsewhere\" as other;\nother::anything(1, 2);\n")
            .expect("compiles");
        let found: Vec<String> = unknown_calls(&ast, &known, &|m| (m == "lib").then_some(&lib))
            .into_iter()
            .map(|u| format!("{:?}: {}", u.position, u.message))
            .collect();
        assert_eq!(
            found,
            [
                "Some((3, 6)): calls unknown function lib::restart/0: restart takes 1 argument(s)",
                "Some((4, 6)): calls unknown function lib::hidden/0: the module lib has no public function hidden",
            ]
        );
    }
}
