//! Model input files: EZKL's `{"input_data": [[...numbers...]]}` format.

use crate::error::CompileError;

/// Flattens nested JSON arrays of numbers, in order.
pub fn flatten_numbers(v: &serde_json::Value) -> Result<Vec<f64>, CompileError> {
    fn walk(v: &serde_json::Value, out: &mut Vec<f64>) -> Result<(), CompileError> {
        match v {
            serde_json::Value::Array(a) => a.iter().try_for_each(|x| walk(x, out)),
            serde_json::Value::Number(n) => {
                out.push(
                    n.as_f64()
                        .ok_or_else(|| CompileError::Input(format!("bad number {n}")))?,
                );
                Ok(())
            }
            other => Err(CompileError::Input(format!(
                "expected numbers, found {other}"
            ))),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out)?;
    Ok(out)
}

/// Reads the single input tensor of an `{"input_data": [[...]]}` document, flattened.
pub fn parse_input_json(text: &str) -> Result<Vec<f64>, CompileError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| CompileError::Input(format!("not JSON: {e}")))?;
    let list = v
        .get("input_data")
        .ok_or_else(|| CompileError::Input("missing the `input_data` field".into()))?
        .as_array()
        .ok_or_else(|| CompileError::Input("`input_data` must be a list of inputs".into()))?;
    if list.len() != 1 {
        return Err(CompileError::Input(format!(
            "`input_data` holds {} inputs, the model takes one",
            list.len()
        )));
    }
    flatten_numbers(&list[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_problems() {
        assert_eq!(
            parse_input_json(r#"{"input_data": [[[1, 2], [3.5]]]}"#).unwrap(),
            vec![1.0, 2.0, 3.5]
        );
        assert!(parse_input_json("{}")
            .unwrap_err()
            .to_string()
            .contains("input_data"));
        assert!(parse_input_json(r#"{"input_data": [[1], [2]]}"#).is_err());
        assert!(parse_input_json(r#"{"input_data": [[1, "x"]]}"#)
            .unwrap_err()
            .to_string()
            .contains("expected numbers"));
    }
}
