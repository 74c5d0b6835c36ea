select id, name, upper(country) as country_code, {{ var('batch', 0) }} as batch
from {{ source('raw', 'customers') }}
