//! The semantic events: track calls with reserved names whose fields the spec requires.
//!
//! [`Semantic::of`] names the event from its encoded bytes (no allocation on the hot
//! path); [`Semantic::check`] checks a whole encoded call against the spec's required
//! fields. The compiler uses the same list to refuse a constant semantic event whose
//! required fields the mapping does not map at all.

/// The semantic events: track calls with reserved names whose fields the spec requires
/// (`components.schemas` `create_update_device`, `delete_device`, `delete_person`,
/// `suppress_person`, `unsuppress_person`, `relationship_deleted`, `group_deleted`,
/// `report_delivery_event`, `report_content_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantic {
    DeviceUpdated,
    DeviceDeleted,
    UserDeleted,
    UserSuppressed,
    UserUnsuppressed,
    RelationshipDeleted,
    ObjectDeleted,
    ReportDelivery,
    ReportContent,
}

impl Semantic {
    pub const ALL: [(Semantic, &'static str); 9] = [
        (Semantic::DeviceUpdated, "Device Created or Updated"),
        (Semantic::DeviceDeleted, "Device Deleted"),
        (Semantic::UserDeleted, "User Deleted"),
        (Semantic::UserSuppressed, "User Suppressed"),
        (Semantic::UserUnsuppressed, "User Unsuppressed"),
        (Semantic::RelationshipDeleted, "Relationship Deleted"),
        (Semantic::ObjectDeleted, "Object Deleted"),
        (Semantic::ReportDelivery, "Report Delivery Event"),
        (Semantic::ReportContent, "Report Content Event"),
    ];

    /// The events the spec lets go without a person (no userId or anonymousId).
    pub fn needs_no_person(self) -> bool {
        matches!(self, Semantic::ReportDelivery | Semantic::ReportContent)
    }

    /// The semantic event named by an encoded event value (`"Device Deleted"`, quotes
    /// included), if any. A byte comparison: no allocation on the hot path.
    pub fn of(encoded: &[u8]) -> Option<Semantic> {
        let name = encoded.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        Semantic::ALL
            .iter()
            .find(|(_, n)| n.as_bytes() == name)
            .map(|(s, _)| *s)
    }

    pub fn name(self) -> &'static str {
        Semantic::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, n)| n)
    }

    /// Checks an encoded call against the fields the spec requires of this event. Runs
    /// only for semantic events, which are rare next to custom events.
    /// The error is the reject's detail (reason `semantic_event`).
    pub fn check(self, call: &[u8]) -> Result<(), String> {
        use serde_json::value::RawValue;
        #[derive(serde::Deserialize)]
        struct Device<'a> {
            #[serde(borrow)]
            token: Option<&'a RawValue>,
            #[serde(borrow, rename = "type")]
            ty: Option<&'a RawValue>,
        }
        #[derive(serde::Deserialize)]
        struct Ctx<'a> {
            #[serde(borrow)]
            device: Option<Device<'a>>,
        }
        #[derive(serde::Deserialize)]
        #[allow(non_snake_case)]
        struct Props<'a> {
            #[serde(borrow)]
            objectId: Option<&'a RawValue>,
            #[serde(borrow)]
            objectTypeId: Option<&'a RawValue>,
            #[serde(borrow)]
            deliveryId: Option<&'a RawValue>,
            #[serde(borrow)]
            metric: Option<&'a RawValue>,
            #[serde(borrow)]
            recipient: Option<&'a RawValue>,
            #[serde(borrow)]
            reason: Option<&'a RawValue>,
            #[serde(borrow, rename = "actionValue")]
            action_value: Option<&'a RawValue>,
            #[serde(borrow)]
            href: Option<&'a RawValue>,
            #[serde(borrow, rename = "activityType")]
            activity_type: Option<&'a RawValue>,
            #[serde(borrow, rename = "actionType")]
            action_type: Option<&'a RawValue>,
            #[serde(borrow, rename = "contentId")]
            content_id: Option<&'a RawValue>,
            #[serde(borrow, rename = "templateId")]
            template_id: Option<&'a RawValue>,
        }
        #[derive(serde::Deserialize)]
        #[allow(non_snake_case)]
        struct Probe<'a> {
            #[serde(borrow)]
            userId: Option<&'a RawValue>,
            #[serde(borrow)]
            anonymousId: Option<&'a RawValue>,
            #[serde(borrow)]
            properties: Option<Props<'a>>,
            #[serde(borrow)]
            context: Option<Ctx<'a>>,
        }
        let p: Probe = serde_json::from_slice(call).map_err(|e| {
            format!(
                "{}: the call is not a JSON object of the expected shape: {e}",
                self.name()
            )
        })?;
        let is_str = |v: Option<&RawValue>| v.is_some_and(|v| v.get().starts_with('"'));
        let missing = |field: &str, hint: &str| {
            Err(format!("a \"{}\" event needs {field}{hint}", self.name()))
        };
        let props = p.properties.as_ref();
        let device = p.context.as_ref().and_then(|c| c.device.as_ref());
        match self {
            Semantic::DeviceUpdated | Semantic::DeviceDeleted => {
                if !is_str(p.userId) {
                    return missing("userId", "");
                }
                if !is_str(device.and_then(|d| d.token)) {
                    return missing(
                        "context.device.token",
                        " (map it in the call's own context: context = { \"device.token\" = \"column\" })",
                    );
                }
                if let Some(t) = device.and_then(|d| d.ty) {
                    if !matches!(t.get(), "\"ios\"" | "\"android\"") {
                        return missing(
                            "context.device.type to be \"ios\" or \"android\"",
                            &format!(" (got {})", t.get()),
                        );
                    }
                }
            }
            Semantic::UserDeleted | Semantic::UserSuppressed | Semantic::UserUnsuppressed => {
                if !is_str(p.userId) {
                    return missing("userId", "");
                }
            }
            Semantic::RelationshipDeleted | Semantic::ObjectDeleted => {
                if self == Semantic::RelationshipDeleted && !is_str(p.userId) {
                    return missing("userId", "");
                }
                if self == Semantic::ObjectDeleted && !is_str(p.anonymousId) {
                    return missing(
                        "anonymousId",
                        " (the spec's group_deleted schema requires it)",
                    );
                }
                if !is_str(props.and_then(|p| p.objectId)) {
                    return missing("properties.objectId (a string)", "");
                }
                if let Some(t) = props.and_then(|p| p.objectTypeId) {
                    if t.get().parse::<i64>().is_err() {
                        return missing(
                            "properties.objectTypeId to be an integer",
                            &format!(" (got {}; set the column's type to int)", t.get()),
                        );
                    }
                }
            }
            Semantic::ReportDelivery => {
                if !is_str(props.and_then(|p| p.deliveryId)) {
                    return missing("properties.deliveryId (a string)", "");
                }
                match props.and_then(|p| p.metric).map(|m| m.get()) {
                    Some("\"delivered\"" | "\"clicked\"" | "\"converted\"" | "\"opened\"") => {}
                    Some(other) => {
                        return missing(
                            "properties.metric to be delivered, clicked, converted or opened",
                            &format!(" (got {other})"),
                        )
                    }
                    None => return missing("properties.metric", ""),
                }
                // The schema types these too: strings when given.
                let strings = props.map_or([None; 4], |p| {
                    [p.recipient, p.reason, p.action_value, p.href]
                });
                for (name, v) in ["recipient", "reason", "actionValue", "href"]
                    .into_iter()
                    .zip(strings)
                {
                    if let Some(v) = v.filter(|v| !v.get().starts_with('"')) {
                        return missing(
                            &format!("properties.{name} to be a string"),
                            &format!(" (got {})", v.get()),
                        );
                    }
                }
            }
            Semantic::ReportContent => {
                // `report_content_event`: properties.activityType is required (the
                // schema types it nowhere); actionType, contentId and templateId are
                // typed when given.
                if props.and_then(|p| p.activity_type).is_none() {
                    return missing("properties.activityType", "");
                }
                if let Some(t) = props.and_then(|p| p.action_type) {
                    if !matches!(t.get(), "\"viewed_content\"" | "\"clicked_content\"") {
                        return missing(
                            "properties.actionType to be viewed_content or clicked_content",
                            &format!(" (got {})", t.get()),
                        );
                    }
                }
                let ints = props.map_or([None; 2], |p| [p.content_id, p.template_id]);
                for (name, v) in ["contentId", "templateId"].into_iter().zip(ints) {
                    if let Some(v) = v.filter(|v| v.get().parse::<i64>().is_err()) {
                        return missing(
                            &format!("properties.{name} to be an integer"),
                            &format!(" (got {}; set the column's type to int)", v.get()),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
