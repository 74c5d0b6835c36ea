select s.country_code, c.country_name, count(*) as customers
from {{ ref('stg_customers') }} as s
left join {{ ref('countries') }} as c on c.code = s.country_code
group by s.country_code, c.country_name
