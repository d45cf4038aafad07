//! Reading and writing the module's linear memory from inside a host call,
//! and handing it bytes the way proxy-wasm does: the host asks the module to
//! allocate (`proxy_on_memory_allocate`), copies, and returns pointer and size.

use wasmtime::{bail, format_err, Result};
use wasmtime::{Caller, Extern, Memory};

use crate::host::Host;

pub struct Guest<'a, 'c> {
    pub caller: &'a mut Caller<'c, Host>,
}

impl<'a, 'c> Guest<'a, 'c> {
    pub fn new(caller: &'a mut Caller<'c, Host>) -> Self {
        Guest { caller }
    }

    pub fn host(&mut self) -> &mut Host {
        self.caller.data_mut()
    }

    fn memory(&mut self) -> Result<Memory> {
        match self.caller.get_export("memory") {
            Some(Extern::Memory(m)) => Ok(m),
            _ => bail!("the module exports no memory"),
        }
    }

    pub fn read(&mut self, ptr: i32, len: i32) -> Result<Vec<u8>> {
        let memory = self.memory()?;
        let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
        memory
            .data(&*self.caller)
            .get(
                ptr..ptr
                    .checked_add(len)
                    .ok_or_else(|| format_err!("pointer overflow"))?,
            )
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format_err!("read of {len} bytes at {ptr:#x} is outside memory"))
    }

    pub fn read_string(&mut self, ptr: i32, len: i32) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.read(ptr, len)?).into_owned())
    }

    pub fn write(&mut self, ptr: i32, bytes: &[u8]) -> Result<()> {
        let memory = self.memory()?;
        memory
            .write(&mut *self.caller, ptr as u32 as usize, bytes)
            .map_err(|_| {
                format_err!(
                    "write of {} bytes at {ptr:#x} is outside memory",
                    bytes.len()
                )
            })
    }

    pub fn write_u32(&mut self, ptr: i32, value: u32) -> Result<()> {
        self.write(ptr, &value.to_le_bytes())
    }

    pub fn write_u64(&mut self, ptr: i32, value: u64) -> Result<()> {
        self.write(ptr, &value.to_le_bytes())
    }

    /// Copies `bytes` into memory the module allocates and stores the pointer
    /// at `ptr_out` and the size at `size_out`. Empty data is returned as a
    /// null pointer, as Envoy does.
    pub fn give(&mut self, bytes: &[u8], ptr_out: i32, size_out: i32) -> Result<()> {
        let ptr = if bytes.is_empty() {
            0
        } else {
            let alloc = self
                .caller
                .get_export("proxy_on_memory_allocate")
                .and_then(Extern::into_func)
                .ok_or_else(|| format_err!("the module exports no proxy_on_memory_allocate"))?
                .typed::<i32, i32>(&*self.caller)?;
            let len = i32::try_from(bytes.len())?;
            let ptr = alloc.call(&mut *self.caller, len)?;
            if ptr == 0 {
                bail!("proxy_on_memory_allocate({len}) returned null");
            }
            self.write(ptr, bytes)?;
            ptr
        };
        self.write_u32(ptr_out, ptr as u32)?;
        self.write_u32(size_out, bytes.len() as u32)
    }

    /// [`Self::give`] for a lookup: status 0 (Ok) with the value, `missing` without it.
    pub fn give_found(
        &mut self,
        value: Option<&[u8]>,
        ptr_out: i32,
        size_out: i32,
        missing: i32,
    ) -> Result<i32> {
        match value {
            Some(v) => {
                self.give(v, ptr_out, size_out)?;
                Ok(0)
            }
            None => Ok(missing),
        }
    }
}
