use tract_onnx::prelude::*;
fn main() -> TractResult<()> {
    let p = std::env::args().nth(1).unwrap();
    let m = tract_onnx::onnx()
        .model_for_path(&p)?
        .into_typed()?
        .into_decluttered()?;
    for n in m.nodes() {
        println!(
            "{} | {} | {:?} | inputs {:?} | out {:?}",
            n.id,
            n.name,
            n.op,
            n.inputs,
            n.outputs.iter().map(|o| &o.fact).collect::<Vec<_>>()
        );
    }
    Ok(())
}
