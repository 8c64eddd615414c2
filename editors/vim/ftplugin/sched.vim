" Filetype plugin for schedc .sched files: comments, and :make runs `schedc check`.
if exists('b:did_ftplugin')
  finish
endif
let b:did_ftplugin = 1

setlocal commentstring=#\ %s
setlocal comments=:#
setlocal formatoptions-=t formatoptions+=croql

" :make checks the current file; the quickfix list gets one entry per diagnostic.
" Concise lines read `file:line:col: error[CODE]: message` (or `warning[CODE]`);
" the entry's text keeps the code: `[E0104]: unknown schedule ...`.
setlocal makeprg=schedc\ check\ --format\ concise\ %
setlocal errorformat=%f:%l:%c:\ %t%*[a-z]%m,%-G%.%#

" :SchedFmt rewrites the buffer with `schedc fmt` (kept unchanged when the file does not parse).
command! -buffer -bar SchedFmt call s:Format()
if !exists('*s:Format')
  function s:Format() abort
    let l:view = winsaveview()
    let l:out = systemlist('schedc fmt -', getline(1, '$'))
    if v:shell_error == 0
      silent keepjumps call setline(1, l:out)
      if line('$') > len(l:out)
        silent execute (len(l:out) + 1) . ',$delete _'
      endif
    else
      echohl ErrorMsg | echo join(l:out, "\n") | echohl None
    endif
    call winrestview(l:view)
  endfunction
endif

let b:undo_ftplugin = 'setlocal commentstring< comments< formatoptions< makeprg< errorformat< | delcommand SchedFmt'
