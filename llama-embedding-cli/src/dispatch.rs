//! Which command runs: the parsed command line handed to its function.

use anyhow::Result;
use llama_embedding::BatchConfig;

use crate::args::{Cli, Command};
use crate::common::{embed_options, engine_mode, load_model};
use crate::{bench, bench_models, commands, runs, serve_cmd, sync_cmd};

pub fn run(cli: Cli) -> Result<u8> {
    if let Some(v) = cli.cpu_variant.as_deref().filter(|v| *v != "auto") {
        llama_embedding::kernels::request_variant(v)?;
    }
    match cli.command {
        Command::Embed(a) => commands::embed(*a),
        Command::Status { run_dir, json } => commands::status(&run_dir, json),
        Command::Errors { run_dir, json } => commands::errors(&run_dir, json),
        Command::Model(m) => commands::model(m),
        Command::Search(a) => commands::search(a),
        Command::Serve(a) => serve_cmd::serve(*a),
        Command::Sync(a) => sync_cmd::sync(*a),
        Command::Export {
            store,
            output,
            format,
            dtype,
        } => commands::export(&store, &output, format.as_deref(), &dtype),
        Command::Runs(r) => runs::runs(r),
        Command::Merge {
            run_dirs,
            output,
            json,
        } => commands::merge(&run_dirs, &output, json),
        Command::Bench(a) => {
            let config = BatchConfig::default()
                .with_embed(embed_options(&a.model)?)
                .with_mode(engine_mode(a.fast, None));
            if !a.models.is_empty() {
                let model_args = a.model.clone();
                let load = |spec: &str| Ok(load_model(Some(spec), &model_args, true)?.0);
                return bench_models::bench_models(*a, config, load);
            }
            let (model, _) = load_model(a.model.model.as_deref(), &a.model, true)?;
            let embed = model.resolve_options(
                config.embed.clone(),
                llama_embedding::presets::Role::Document,
                a.model.force_dimensions,
            )?;
            bench::bench(*a, model, config.with_embed(embed))
        }
    }
}
