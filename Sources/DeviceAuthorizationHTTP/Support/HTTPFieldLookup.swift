import HTTPTypes

extension HTTPFields {
    /// The value of the field `name`, as `self[name]` gives it (several fields joined with ", "),
    /// without `self[name]`'s cost when there is one field: that subscript joins the values into a
    /// new string even for a single one (a few allocations per lookup, on every poll).
    func value(of name: HTTPField.Name) -> String? {
        var found: String?
        for field in self where field.name == name {
            guard found == nil else { return self[name] }
            found = field.value
        }
        return found
    }
}
