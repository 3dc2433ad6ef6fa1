//! The sandbox: one configured Rhai engine that compiles and runs every runbook.
//!
//! Limits come from `[runbooks]`: operations, call depth, expression depth, string, array
//! and map sizes, and a wall-clock deadline checked on every operation (`on_progress`),
//! which also serves cancellation. `eval` is disabled; `import` only resolves files inside
//! the runbook directory; `print` and `debug` go to the incident's timeline.
//!
//! Runbook functions (`exec`, `http`, `log`, `sleep`, `escalate`, `silence`, `query`) are
//! registered once on the engine. Each run sets a [`Host`] for its thread (runs execute on
//! tokio's blocking pool, one run per thread at a time); the functions call into it. A
//! failed step, `escalate` and every limit stop the run with a non-catchable termination,
//! so a runbook cannot swallow them with `try`/`catch`.
//!
//! While a function runs, [`call_site`] says where in the runbook it was called from, so a
//! host can point at the line (`medic test` does). Time comes from the host
//! ([`Host::now`]), so a host that fakes `sleep` fakes the run's clock with it.

use std::cell::RefCell;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::module_resolvers::FileModuleResolver;
use rhai::{
    Array, Dynamic, Engine, EvalAltResult, Map, Module, ModuleResolver, NativeCallContext,
    Position, Scope, Shared, AST,
};

use crate::config::RunbooksConfig;
use crate::incident::Reason;

/// Why a run stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub reason: Reason,
    pub message: String,
}

impl Stop {
    pub fn new(reason: Reason, message: impl Into<String>) -> Stop {
        Stop {
            reason,
            message: message.into(),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The script ran to its end: the remediation is applied.
    Completed,
    /// The script was stopped: escalate with this reason.
    Stopped(Stop),
}

/// What a runbook's functions call into. One per run (the `steps` module implements it).
pub trait Host {
    fn exec(&self, program: &str, args: Vec<String>) -> Result<Map, Stop>;
    fn http(&self, method: &str, url: &str, body: &str) -> Result<Map, Stop>;
    fn log(&self, message: &str);
    /// Waits `seconds`; the sandbox has already checked it fits in the run's time.
    fn sleep(&self, duration: Duration) -> Result<(), Stop>;
    fn silence(&self, duration: &str, comment: &str) -> Result<String, Stop>;
    fn query(&self, promql: &str) -> Result<Array, Stop>;
    /// The run's clock, for its deadline. A host whose `sleep` returns at once moves it
    /// forward by what it slept, so limits hold as in a real run.
    fn now(&self) -> Instant {
        Instant::now()
    }
    /// Told once when a runbook function stops the run (`escalate`, a failed step, a
    /// sleep past the limit), while [`call_site`] still points at that call.
    fn stopping(&self, _stop: &Stop) {}
}

/// Where in a runbook a function was called: 1-based line and column, and the source
/// when the call is in an imported module (`None` means the runbook itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSite {
    pub source: Option<String>,
    pub line: usize,
    pub column: usize,
}

/// The call site of the runbook function running on this thread, if any.
pub fn call_site() -> Option<CallSite> {
    current().and_then(|state| state.call.borrow().clone())
}

/// Cancels a run from another thread; the run stops at its next operation, and a step
/// in progress (a command, a sleep) is interrupted.
#[derive(Debug, Clone)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Cancel {
            flag: Arc::new(AtomicBool::new(false)),
            tx: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl Cancel {
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.tx.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Completes when the run is cancelled (for steps that wait).
    pub fn cancelled(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }
}

/// A compile error, with the position when known.
#[derive(Debug, Clone)]
pub struct CompileError {
    pub position: Option<(usize, usize)>,
    pub message: String,
}

/// The state of the run on this thread.
struct RunState {
    host: Box<dyn Host>,
    deadline: Instant,
    timeout: Duration,
    cancel: Cancel,
    stop: RefCell<Option<Stop>>,
    /// Where the function being called was called from.
    call: RefCell<Option<CallSite>>,
}

thread_local! {
    static RUN: RefCell<Option<Rc<RunState>>> = const { RefCell::new(None) };
}

fn current() -> Option<Rc<RunState>> {
    RUN.with(|r| r.borrow().clone())
}

/// Stops the run with `stop`: recorded for the sandbox, then a termination Rhai cannot catch.
fn terminate(state: &RunState, stop: Stop) -> Box<EvalAltResult> {
    state.host.stopping(&stop);
    *state.stop.borrow_mut() = Some(stop);
    Box::new(EvalAltResult::ErrorTerminated(
        Dynamic::UNIT,
        Position::NONE,
    ))
}

fn no_run() -> Box<EvalAltResult> {
    "runbook functions are only available during a run".into()
}

/// The run on this thread, with the call site of the function being called recorded.
fn enter(ctx: &NativeCallContext) -> Result<Rc<RunState>, Box<EvalAltResult>> {
    let state = current().ok_or_else(no_run)?;
    let pos = ctx.call_position();
    *state.call.borrow_mut() = pos.line().map(|line| CallSite {
        source: ctx.call_source().map(str::to_string),
        line,
        column: pos.position().unwrap_or(1),
    });
    Ok(state)
}

/// The configured engine.
pub struct Sandbox {
    engine: Engine,
    timeout: Duration,
    limits: String,
}

impl Sandbox {
    pub fn new(cfg: &RunbooksConfig) -> Sandbox {
        let mut engine = Engine::new();
        engine
            .set_max_operations(cfg.max_operations)
            .set_max_call_levels(cfg.max_call_depth)
            .set_max_expr_depths(cfg.max_expr_depth, cfg.max_expr_depth)
            .set_max_string_size(cfg.max_string_size)
            .set_max_array_size(cfg.max_array_size)
            .set_max_map_size(cfg.max_map_size)
            .set_max_modules(64)
            .set_max_variables(10_000)
            .set_max_functions(1_000)
            .disable_symbol("eval");
        engine.set_module_resolver(DirResolver::new(&cfg.dir));
        engine.on_progress(|_ops| {
            let state = current()?;
            if state.cancel.is_cancelled() {
                return Some(Dynamic::from("cancelled"));
            }
            (state.host.now() >= state.deadline).then(|| Dynamic::from("timeout"))
        });
        engine.on_print(|s| {
            if let Some(state) = current() {
                // Rhai does not say where `print` was called.
                *state.call.borrow_mut() = None;
                state.host.log(s);
            }
        });
        engine.on_debug(|s, src, pos| {
            if let Some(state) = current() {
                *state.call.borrow_mut() = pos.line().map(|line| CallSite {
                    source: src.map(str::to_string),
                    line,
                    column: pos.position().unwrap_or(1),
                });
                state.host.log(&format!("debug {pos}: {s}"));
            }
        });
        register_functions(&mut engine);
        let limits = format!(
            "max_operations={}, max_call_depth={}, max_expr_depth={}, max_string_size={}, max_array_size={}, max_map_size={}",
            cfg.max_operations, cfg.max_call_depth, cfg.max_expr_depth, cfg.max_string_size,
            cfg.max_array_size, cfg.max_map_size
        );
        Sandbox {
            engine,
            timeout: cfg.timeout,
            limits,
        }
    }

    /// The configured engine, for checks of what a runbook can call.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles a runbook's source.
    pub fn compile(&self, source: &str) -> Result<AST, CompileError> {
        self.engine.compile(source).map_err(|e| CompileError {
            position: line_col(e.position()),
            message: e.err_type().to_string(),
        })
    }

    /// Runs `ast` to its end or until it is stopped, on the calling (blocking) thread.
    /// `alert`, `incident` and `secrets` are in the script's scope as maps.
    pub fn run(
        &self,
        ast: &AST,
        vars: Vec<(&str, Dynamic)>,
        host: Box<dyn Host>,
        cancel: Cancel,
    ) -> RunEnd {
        let deadline = host.now() + self.timeout;
        let state = Rc::new(RunState {
            host,
            deadline,
            timeout: self.timeout,
            cancel,
            stop: RefCell::new(None),
            call: RefCell::new(None),
        });
        RUN.with(|r| *r.borrow_mut() = Some(state.clone()));
        let mut scope = Scope::new();
        for (name, value) in vars {
            scope.push_constant(name, value);
        }
        let result = self.engine.run_ast_with_scope(&mut scope, ast);
        RUN.with(|r| *r.borrow_mut() = None);
        let recorded = state.stop.borrow_mut().take();
        match (result, recorded) {
            (_, Some(stop)) => RunEnd::Stopped(stop),
            (Ok(()), None) => RunEnd::Completed,
            (Err(e), None) => RunEnd::Stopped(self.explain(&e, &state)),
        }
    }

    /// Turns a Rhai error into the reason and a message that says which limit or line.
    fn explain(&self, err: &EvalAltResult, state: &RunState) -> Stop {
        let root = innermost(err);
        let at = match line_col(root.position()).or_else(|| line_col(err.position())) {
            Some((l, c)) => format!(" at line {l}, column {c}"),
            None => String::new(),
        };
        match root {
            EvalAltResult::ErrorTerminated(token, _) => {
                if token.clone().into_string().is_ok_and(|t| t == "cancelled")
                    || state.cancel.is_cancelled()
                {
                    Stop::new(
                        Reason::Interrupted,
                        "the run was cancelled (medic is stopping)",
                    )
                } else {
                    Stop::new(
                        Reason::Timeout,
                        format!(
                            "the runbook ran longer than runbooks.timeout ({})",
                            humantime::format_duration(state.timeout)
                        ),
                    )
                }
            }
            EvalAltResult::ErrorTooManyOperations(_) => Stop::new(
                Reason::RunbookError,
                format!(
                    "the runbook exceeded runbooks.max_operations{at} ({})",
                    self.limits
                ),
            ),
            EvalAltResult::ErrorStackOverflow(_) => Stop::new(
                Reason::RunbookError,
                format!(
                    "the runbook exceeded runbooks.max_call_depth (recursion too deep){at} ({})",
                    self.limits
                ),
            ),
            EvalAltResult::ErrorDataTooLarge(what, _) => Stop::new(
                Reason::RunbookError,
                format!(
                    "the runbook exceeded a size limit: {what}{at} ({})",
                    self.limits
                ),
            ),
            EvalAltResult::ErrorTooManyVariables(_) | EvalAltResult::ErrorTooManyModules(_) => {
                Stop::new(
                    Reason::RunbookError,
                    format!("the runbook exceeded a sandbox limit: {root}{at}"),
                )
            }
            _ => Stop::new(
                Reason::RunbookError,
                format!("runbook error{at}: {}", describe(err)),
            ),
        }
    }
}

/// The error at the bottom of nested function-call and module errors.
fn innermost(err: &EvalAltResult) -> &EvalAltResult {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
        | EvalAltResult::ErrorInModule(_, inner, _) => innermost(inner),
        other => other,
    }
}

/// The error's message without Rhai's trailing position (we print our own).
fn describe(err: &EvalAltResult) -> String {
    let root = innermost(err);
    let text = root.to_string();
    match text.rfind(" (line ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

fn line_col(pos: Position) -> Option<(usize, usize)> {
    Some((pos.line()?, pos.position().unwrap_or(1)))
}

/// Converts a Rhai array of arguments to strings; anything else is a runbook error.
fn string_args(args: Array) -> Result<Vec<String>, Box<EvalAltResult>> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            if a.is_string() {
                Ok(a.into_string().unwrap_or_default())
            } else if a.is_int() || a.is_float() || a.is_bool() {
                Ok(a.to_string())
            } else {
                Err(format!(
                    "exec: argument {i} is a {}, expected a string",
                    a.type_name()
                )
                .into())
            }
        })
        .collect()
}

fn register_functions(engine: &mut Engine) {
    engine.register_fn(
        "exec",
        |ctx: NativeCallContext, program: &str, args: Array| -> Result<Map, Box<EvalAltResult>> {
            let state = enter(&ctx)?;
            let args = string_args(args)?;
            state
                .host
                .exec(program, args)
                .map_err(|stop| terminate(&state, stop))
        },
    );
    engine.register_fn(
        "exec",
        |ctx: NativeCallContext, program: &str| -> Result<Map, Box<EvalAltResult>> {
            let state = enter(&ctx)?;
            state
                .host
                .exec(program, Vec::new())
                .map_err(|stop| terminate(&state, stop))
        },
    );
    engine.register_fn(
        "http",
        |ctx: NativeCallContext,
         method: &str,
         url: &str,
         body: &str|
         -> Result<Map, Box<EvalAltResult>> {
            let state = enter(&ctx)?;
            state
                .host
                .http(method, url, body)
                .map_err(|stop| terminate(&state, stop))
        },
    );
    engine.register_fn(
        "http",
        |ctx: NativeCallContext, method: &str, url: &str| -> Result<Map, Box<EvalAltResult>> {
            let state = enter(&ctx)?;
            state
                .host
                .http(method, url, "")
                .map_err(|stop| terminate(&state, stop))
        },
    );
    engine.register_fn(
        "log",
        |ctx: NativeCallContext, message: &str| -> Result<(), Box<EvalAltResult>> {
            let state = enter(&ctx)?;
            state.host.log(message);
            Ok(())
        },
    );
    engine.register_fn(
        "log",
        |ctx: NativeCallContext, message: Dynamic| -> Result<(), Box<EvalAltResult>> {
            let state = enter(&ctx)?;
            state.host.log(&message.to_string());
            Ok(())
        },
    );
    engine.register_fn("sleep", |ctx: NativeCallContext, seconds: rhai::INT| {
        sleep(&ctx, seconds as f64)
    });
    engine.register_fn("sleep", |ctx: NativeCallContext, seconds: rhai::FLOAT| {
        sleep(&ctx, seconds)
    });
    engine.register_fn(
        "escalate",
        |ctx: NativeCallContext, reason: &str| -> Result<(), Box<EvalAltResult>> {
            let state = enter(&ctx)?;
            Err(terminate(&state, Stop::new(Reason::Requested, reason)))
        },
    );
    engine.register_fn(
        "silence",
        |ctx: NativeCallContext,
         duration: &str,
         comment: &str|
         -> Result<String, Box<EvalAltResult>> {
            let state = enter(&ctx)?;
            state
                .host
                .silence(duration, comment)
                .map_err(|stop| terminate(&state, stop))
        },
    );
    engine.register_fn(
        "query",
        |ctx: NativeCallContext, promql: &str| -> Result<Array, Box<EvalAltResult>> {
            let state = enter(&ctx)?;
            state
                .host
                .query(promql)
                .map_err(|stop| terminate(&state, stop))
        },
    );
}

fn sleep(ctx: &NativeCallContext, seconds: f64) -> Result<(), Box<EvalAltResult>> {
    let state = enter(ctx)?;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("sleep: {seconds} is not a number of seconds").into());
    }
    let wanted = Duration::from_secs_f64(seconds);
    let left = state.deadline.saturating_duration_since(state.host.now());
    if wanted > left {
        let stop = Stop::new(
            Reason::Timeout,
            format!(
                "sleep({seconds}) would outlast the run's time limit (runbooks.timeout {}, {} left)",
                humantime::format_duration(state.timeout),
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            ),
        );
        return Err(terminate(&state, stop));
    }
    state
        .host
        .sleep(wanted)
        .map_err(|stop| terminate(&state, stop))
}

/// Resolves `import "name"` to `<runbooks.dir>/name.rhai`, and nothing outside it.
struct DirResolver {
    dir: PathBuf,
    inner: FileModuleResolver,
}

impl DirResolver {
    fn new(dir: &Path) -> DirResolver {
        DirResolver {
            dir: dir.to_path_buf(),
            inner: FileModuleResolver::new_with_path(dir),
        }
    }
}

impl ModuleResolver for DirResolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let p = Path::new(path);
        let inside = !path.is_empty()
            && !path.contains('\\')
            && p.components().all(|c| matches!(c, Component::Normal(_)));
        if !inside {
            // Not ErrorModuleNotFound: Rhai replaces that with a plain "not found".
            return Err(Box::new(EvalAltResult::ErrorRuntime(
                format!(
                    "import {path:?}: imports are limited to files inside {}",
                    self.dir.display()
                )
                .into(),
                pos,
            )));
        }
        // Relative to the runbook directory, never to the importing file.
        let _ = source;
        self.inner.resolve(engine, None, path, pos)
    }
}

#[cfg(test)]
mod tests;
