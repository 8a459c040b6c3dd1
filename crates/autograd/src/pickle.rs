//! A restricted pickle reader: the stack machine of Python's `pickle` for the opcodes of protocols
//! 2 to 5 that data (not code) needs, with every global, call and persistent id handed to a
//! [`Resolver`] that decides what is allowed. It never runs anything: an unknown global is an
//! error from the resolver, as `torch.load(weights_only=True)` refuses it.
//!
//! Input is untrusted: every read is bounds-checked, sizes are checked against what is left of
//! the input before allocating, lists and dicts are shared (`Rc`) so memo references cannot
//! multiply memory, and converting the result refuses nesting deeper than [`MAX_DEPTH`] (which
//! also stops self-referencing structures).

use crate::Tensor;
use ember_storage::{Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Deepest nesting of containers accepted when converting a result.
pub(crate) const MAX_DEPTH: usize = 64;

/// A value on the pickle stack.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// A global the resolver allowed, as `module.name`.
    Global(String),
    /// A tensor the resolver built.
    Tensor(Tensor),
    /// A storage the resolver loaded for a persistent id (a flat tensor of its elements).
    Storage(Tensor),
}

impl Value {
    /// Short description for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Tensor(_) => "tensor",
            Value::Storage(_) => "storage",
        }
    }
}

/// What the pickle may refer to beyond plain data.
pub(crate) trait Resolver {
    /// `module.name` as a value, or an error naming it when it is not allowed.
    fn global(&mut self, module: &str, name: &str) -> Result<Value>;
    /// The result of calling an allowed global with `args` (REDUCE / NEWOBJ).
    fn call(&mut self, callable: &str, args: Vec<Value>) -> Result<Value>;
    /// The object behind a persistent id (BINPERSID).
    fn persistent_load(&mut self, pid: Value) -> Result<Value>;
}

/// One stack entry: a value or a MARK.
enum Slot {
    Mark,
    Value(Value),
}

struct Machine<'a, R: Resolver> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: HashMap<u64, Value>,
    resolver: &'a mut R,
    what: &'a str,
}

/// Runs the pickle in `data` to its STOP and returns the value left on the stack.
pub(crate) fn unpickle(data: &[u8], resolver: &mut impl Resolver, what: &str) -> Result<Value> {
    Machine { data, pos: 0, stack: vec![], memo: HashMap::new(), resolver, what }.run()
}

impl<R: Resolver> Machine<'_, R> {
    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::format(self.what, format!("pickle at byte {}: {msg}", self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.data.len() - self.pos < n {
            return Err(self.err(format!("truncated: needs {n} more bytes, {} left", self.data.len() - self.pos)));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        b.copy_from_slice(self.take(N)?);
        Ok(b)
    }

    /// A length prefix, checked against what is left of the input.
    fn len(&mut self, bytes: usize) -> Result<usize> {
        let n = match bytes {
            1 => u64::from(self.u8()?),
            4 => u64::from(u32::from_le_bytes(self.le()?)),
            _ => u64::from_le_bytes(self.le()?),
        };
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(format!("length {n} runs past the end ({left} bytes left)")));
        }
        Ok(n as usize)
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| self.err("unterminated line"))?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| self.err("a GLOBAL name is not UTF-8"))?.to_string();
        self.pos += end + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) {
        self.stack.push(Slot::Value(v));
    }

    fn pop(&mut self) -> Result<Value> {
        match self.stack.pop() {
            Some(Slot::Value(v)) => Ok(v),
            Some(Slot::Mark) => Err(self.err("a MARK where a value was expected")),
            None => Err(self.err("stack underflow")),
        }
    }

    fn top(&self) -> Result<&Value> {
        match self.stack.last() {
            Some(Slot::Value(v)) => Ok(v),
            _ => Err(self.err("no value on the stack")),
        }
    }

    /// The values above the topmost MARK, removing them and the MARK.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let at = self.stack.iter().rposition(|s| matches!(s, Slot::Mark)).ok_or_else(|| self.err("no MARK"))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|s| match s {
                Slot::Value(v) => v,
                Slot::Mark => unreachable!("split after the last MARK"),
            })
            .collect())
    }

    fn str(&mut self, n: usize) -> Result<Value> {
        let at = self.pos;
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(Value::Str(s.to_string())),
            Err(_) => Err(Error::format(self.what, format!("pickle at byte {at}: a string is not UTF-8"))),
        }
    }

    fn memo_get(&self, k: u64) -> Result<Value> {
        self.memo.get(&k).cloned().ok_or_else(|| self.err(format!("memo key {k} was never stored")))
    }

    fn memo_put(&mut self, k: u64) -> Result<()> {
        let v = self.top()?.clone();
        self.memo.insert(k, v);
        Ok(())
    }

    fn callable_name(&self, v: &Value) -> Result<String> {
        match v {
            Value::Global(g) => Ok(g.clone()),
            other => Err(self.err(format!("cannot call a {}", other.kind()))),
        }
    }

    fn extend_list(&self, list: &Value, items: Vec<Value>) -> Result<()> {
        match list {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            other => Err(self.err(format!("APPEND to a {}", other.kind()))),
        }
    }

    fn set_items(&self, dict: &Value, items: Vec<Value>) -> Result<()> {
        let Value::Dict(d) = dict else { return Err(self.err(format!("SETITEM on a {}", dict.kind()))) };
        if !items.len().is_multiple_of(2) {
            return Err(self.err("SETITEMS with an odd number of values"));
        }
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn run(mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(self.err(format!("pickle protocol {p} is newer than 5")));
                    }
                }
                0x95 => {
                    self.le::<8>()?; // FRAME: a size hint
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Slot::Mark),
                b'0' => {
                    self.stack.pop().ok_or_else(|| self.err("POP on an empty stack"))?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.push(Value::Int(v.into()));
                }
                0x8a => {
                    let n = self.len(1)?;
                    if n > 8 {
                        return Err(self.err(format!("an integer of {n} bytes does not fit 64 bits")));
                    }
                    let b = self.take(n)?;
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) { [0xffu8; 8] } else { [0u8; 8] };
                    buf[..n].copy_from_slice(b);
                    self.push(Value::Int(i64::from_le_bytes(buf)));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.le()?);
                    self.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.len(4)?;
                    let v = self.str(n)?;
                    self.push(v);
                }
                0x8c => {
                    let n = self.len(1)?;
                    let v = self.str(n)?;
                    self.push(v);
                }
                0x8d => {
                    let n = self.len(8)?;
                    let v = self.str(n)?;
                    self.push(v);
                }
                b'U' | b'T' | b'C' | b'B' | 0x8e => {
                    let n = match op {
                        b'U' | b'C' => self.len(1)?,
                        b'T' | b'B' => self.len(4)?,
                        _ => self.len(8)?,
                    };
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b));
                }
                b')' => self.push(Value::Tuple(Rc::new(vec![]))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>>>()?;
                    items.reverse();
                    self.push(Value::Tuple(Rc::new(items)));
                }
                b']' => self.push(Value::List(Rc::default())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_list(self.top()?, vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_list(self.top()?, items)?;
                }
                b'}' => self.push(Value::Dict(Rc::default())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = Value::Dict(Rc::default());
                    self.set_items(&d, items)?;
                    self.push(d);
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(self.top()?, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(self.top()?, items)?;
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(k.into())?;
                }
                b'r' => {
                    let k = u32::from_le_bytes(self.le()?);
                    self.memo_put(k.into())?;
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()?;
                    let v = self.memo_get(k.into())?;
                    self.push(v);
                }
                b'j' => {
                    let k = u32::from_le_bytes(self.le()?);
                    let v = self.memo_get(k.into())?;
                    self.push(v);
                }
                b'c' => {
                    let (module, name) = (self.line()?, self.line()?);
                    let g = self.resolver.global(&module, &name)?;
                    self.push(g);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(self.err("STACK_GLOBAL needs two strings"));
                    };
                    let g = self.resolver.global(&module, &name)?;
                    self.push(g);
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let name = self.callable_name(&callable)?;
                    let args = match args {
                        Value::Tuple(t) => t.as_ref().clone(),
                        other => return Err(self.err(format!("call arguments must be a tuple, got {}", other.kind()))),
                    };
                    let v = self.resolver.call(&name, args)?;
                    self.push(v);
                }
                b'b' => {
                    // BUILD: the state of a dict (OrderedDict's `_metadata`) or a tensor (hooks) is
                    // not needed; anything else has no business being built here
                    let _state = self.pop()?;
                    match self.top()? {
                        Value::Dict(_) | Value::Tensor(_) => {}
                        other => return Err(self.err(format!("BUILD on a {}", other.kind()))),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.resolver.persistent_load(pid)?;
                    self.push(v);
                }
                other => {
                    return Err(self.err(format!(
                        "opcode 0x{other:02x} ({:?}) is not accepted (code, not data, or an unsupported old protocol)",
                        other as char
                    )))
                }
            }
        }
    }
}
