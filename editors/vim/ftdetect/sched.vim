" .sched files are schedc schedules.
autocmd BufRead,BufNewFile *.sched setfiletype sched
