//! Composes the Lua scripts: every `lua/<name>.lua` at the repository
//! root, its `-- @include` and `-- @inline` lines expanded from
//! `lua/include/` and `lua/inline/` (see `build/lua_include.rs`), is
//! written to `$OUT_DIR/lua/<name>.lua`, which `src/script.rs` embeds. A
//! missing part fails the build.

#[path = "build/lua_include.rs"]
mod lua_include;

use std::error::Error;
use std::fs;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let lua = manifest.join("../../lua");
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("lua");
    fs::create_dir_all(&out)?;
    println!("cargo:rerun-if-changed={}", lua.display());
    println!("cargo:rerun-if-changed=build/lua_include.rs");

    let read_part = |part: lua_include::Part, name: &str| {
        let folder = match part {
            lua_include::Part::Include => "include",
            lua_include::Part::Inline => "inline",
        };
        fs::read_to_string(lua.join(folder).join(format!("{name}.lua"))).ok()
    };
    let mut scripts: Vec<PathBuf> = fs::read_dir(&lua)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    scripts.retain(|p| p.extension().is_some_and(|e| e == "lua"));
    scripts.sort();
    for path in scripts {
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{} is not a UTF-8 file name", path.display()))?;
        let text = fs::read_to_string(&path)?;
        let composed = lua_include::expand(file, &text, &read_part)?;
        fs::write(out.join(file), composed)?;
    }
    Ok(())
}
