//! `llama-embed model kernels`: the CPU, ggml's CPU kernel variants and which one runs.

use anyhow::Result;
use llama_embedding::kernels;

use crate::exit::EXIT_OK;

pub fn kernels(json: bool) -> Result<u8> {
    let dir = kernels::backends_dir()?;
    let all = kernels::variants(&dir)?;
    let chosen = kernels::kernels()?;
    if json {
        let variants: Vec<_> = all
            .iter()
            .map(|v| {
                serde_json::json!({
                    "name": v.name,
                    "score": v.score,
                    "features": v.features(),
                    "path": v.path,
                })
            })
            .collect();
        let out = serde_json::json!({"chosen": chosen, "variants": variants, "dir": dir});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(EXIT_OK);
    }
    println!("cpu:      {}", chosen.cpu.model);
    println!("flags:    {}", chosen.cpu.flags.join(" "));
    println!("running:  {} ({})", chosen.describe(), chosen.choice);
    for r in &chosen.refused {
        println!("refused:  {}: {}", r.variant, r.reason);
    }
    println!("library:  {}", dir.display());
    println!();
    println!("{:<16} {:>6}  instruction sets", "variant", "score");
    for v in &all {
        let mark = if v.name == chosen.variant { "*" } else { " " };
        let score = if v.score == 0 {
            "-".to_string()
        } else {
            v.score.to_string()
        };
        println!(
            "{mark}{:<15} {score:>6}  {}",
            v.name,
            v.features().join(" ")
        );
    }
    println!("\n(score -: this CPU lacks an instruction set the variant needs)");
    Ok(EXIT_OK)
}
