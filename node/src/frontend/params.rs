//! Bind parameters to DataFusion values.
//!
//! arrow-pg decodes most types. Three kinds are handled around it: `json`
//! parameters and NULLs of no known type are read as text (arrow-pg cannot
//! decode the former and drops the latter), and `numeric` parameters bound
//! to decimals are decoded by [`super::numeric::decode_param`] (arrow-pg's
//! `rust_decimal` holds 28 digits).

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::metadata::ScalarAndMetadata;
use datafusion::common::ParamValues;
use pgwire::api::portal::Portal;
use pgwire::api::stmt::StoredStatement;
use pgwire::api::Type;
use pgwire::error::PgWireResult;

use super::handler::pg_error;
use super::numeric::decode_param;

/// Decodes `portal`'s parameters, typed as the plan inferred (`types`).
pub fn decode<S: Clone>(
    portal: &Portal<S>,
    types: &[Option<&DataType>],
) -> PgWireResult<ParamValues> {
    let n = portal.parameters.len();
    let declared = &portal.statement.parameter_types;
    let declared_at = |i: usize| declared.get(i).cloned().flatten();
    let inferred = |i: usize| types.get(i).copied().flatten();
    let as_text = |i: usize| match declared_at(i) {
        Some(t) if t == Type::JSON || t == Type::JSONB => true,
        Some(t) if t != Type::UNKNOWN => false,
        _ => portal.parameters.get(i).is_some_and(|v| v.is_none()) && inferred(i).is_none(),
    };
    let mut own = Vec::with_capacity(n);
    for i in 0..n {
        let numeric = match declared_at(i) {
            Some(t) if t == Type::NUMERIC => true,
            Some(t) if t != Type::UNKNOWN => false,
            _ => matches!(
                inferred(i),
                Some(DataType::Decimal128(..) | DataType::Decimal256(..))
            ),
        };
        let value = portal.parameters.get(i).and_then(|v| v.as_deref());
        let binary = portal.parameter_format.is_binary(i);
        own.push(match numeric {
            true => decode_param(value, binary, inferred(i))
                .transpose()
                .map_err(pg_error)?,
            false => None,
        });
    }
    if !(0..n).any(|i| as_text(i) || own[i].is_some()) {
        return arrow_pg::datatypes::df::deserialize_parameters(portal, types);
    }
    // arrow-pg reads a copy in which our own parameters are text NULLs.
    let mut declared_types = declared.clone();
    declared_types.resize(n, None);
    let mut p: Portal<()> = Portal::default();
    p.parameter_format = portal.parameter_format.clone();
    p.parameters = portal.parameters.clone();
    for i in 0..n {
        if own[i].is_some() {
            p.parameters[i] = None;
        }
        if as_text(i) || own[i].is_some() {
            declared_types[i] = Some(Type::TEXT);
        }
    }
    let mut their_types = types.to_vec();
    for (t, o) in their_types.iter_mut().zip(&own) {
        if o.is_some() {
            *t = None;
        }
    }
    p.statement = Arc::new(StoredStatement::new(String::new(), (), declared_types));
    let mut values = arrow_pg::datatypes::df::deserialize_parameters(&p, &their_types)?;
    if let ParamValues::List(list) = &mut values {
        for (slot, o) in list.iter_mut().zip(own) {
            if let Some(v) = o {
                *slot = ScalarAndMetadata::from(v);
            }
        }
    }
    Ok(values)
}
