{#- Jinja macros shared by every model (dbt style). -#}
{%- macro event_time_columns(ts) -%}
(isodow({{ ts }}) - 1) AS weekday, ((hour({{ ts }}) * 60 + minute({{ ts }})) // {{ var('slot_minutes') }}) AS time_slot
{%- endmacro -%}
